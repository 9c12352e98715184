#!/usr/bin/env python3
"""Generates a synthetic application log corpus for the archive benchmark.

    scripts/bench/gen-corpus.py OUT_DIR SIZE_MB [--seed N]

Writes 8 files totalling SIZE_MB megabytes (10^6 bytes) into OUT_DIR: nginx access and error
logs, JSON lines from an API service, a Java-style application log with stack traces, a
syslog-style journal and a worker log. Lines carry timestamps, levels, request ids, user ids,
IP addresses, durations and free text, with the repetition real logs have, so that `gzip -6`
compresses the corpus to roughly 25-30% of its size. The output is deterministic for a seed.
Modification times are staggered (newest first: app.json.log, access.log, ...), one hour apart.
"""

import argparse
import os
import random
import sys
import time

FILES = [
    # (name, share of the total, generator name)
    ("api/app.json.log", 0.22, "json"),
    ("nginx/access.log", 0.22, "access"),
    ("app/service.log", 0.16, "java"),
    ("worker/worker.log", 0.12, "worker"),
    ("journal/syslog", 0.10, "syslog"),
    ("nginx/error.log", 0.06, "nginx_error"),
    ("api/app.json.log.1", 0.07, "json"),
    ("nginx/access.log.1", 0.05, "access"),
]

PATHS = [
    "/api/v1/orders", "/api/v1/orders/{id}", "/api/v1/users/{id}", "/api/v1/cart",
    "/api/v1/cart/items", "/api/v1/search", "/api/v1/products/{id}", "/health",
    "/api/v2/recommendations", "/static/app.{hash}.js", "/static/style.{hash}.css",
    "/api/v1/payments/{id}/capture", "/login", "/logout", "/api/v1/inventory/{id}",
]
METHODS = ["GET"] * 12 + ["POST"] * 4 + ["PUT", "DELETE", "PATCH"]
STATUSES = [200] * 40 + [201] * 4 + [204] * 3 + [301, 302, 304] * 2 + [400, 401, 403, 404] + [500, 502, 503]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "curl/8.5.0", "ELB-HealthChecker/2.0", "okhttp/4.12.0", "python-requests/2.31.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
]
LEVELS = ["INFO"] * 14 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
LOGGERS = [
    "com.example.orders.OrderService", "com.example.orders.OrderController",
    "com.example.payments.PaymentGateway", "com.example.inventory.StockClient",
    "com.example.auth.TokenFilter", "org.hibernate.SQL", "com.zaxxer.hikari.pool.HikariPool",
    "org.springframework.web.servlet.DispatcherServlet",
]
MESSAGES = [
    "order {id} created for user {user} with {n} items",
    "payment authorized for order {id} amount={amount} currency=USD",
    "cache miss for key product:{id}, loading from database",
    "request completed status={status} duration={ms}ms",
    "retrying call to inventory service attempt={n} backoff={ms}ms",
    "token validated for user {user} scopes=[read,write]",
    "slow query detected duration={ms}ms table=orders rows={n}",
    "connection pool stats active={n} idle={n2} waiting=0",
    "published event OrderCreated id={id} partition={n}",
    "user {user} added product {id} to cart quantity={n}",
]
SQL = [
    "select o.id, o.user_id, o.status, o.total from orders o where o.user_id=? and o.status in (?, ?)",
    "update inventory set reserved = reserved + ? where product_id = ? and version = ?",
    "insert into order_items (order_id, product_id, quantity, price) values (?, ?, ?, ?)",
]
STACK = [
    "java.net.SocketTimeoutException: Read timed out",
    "\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
    "\tat java.base/sun.nio.ch.NioSocketImpl.implRead(NioSocketImpl.java:314)",
    "\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)",
    "\tat okhttp3.internal.http1.Http1ExchangeCodec.readResponseHeaders(Http1ExchangeCodec.kt:179)",
    "\tat com.example.inventory.StockClient.reserve(StockClient.java:87)",
    "\tat com.example.orders.OrderService.placeOrder(OrderService.java:142)",
    "\tat com.example.orders.OrderController.create(OrderController.java:58)",
    "\t... 87 common frames omitted",
]
SYSLOG = [
    "systemd[1]: Started Session {n} of User ec2-user.",
    "sshd[{pid}]: Accepted publickey for ec2-user from {ip} port {port} ssh2: ED25519 SHA256:{hash}",
    "kernel: [{uptime}] TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.",
    "amazon-ssm-agent[{pid}]: INFO [MessagingDeliveryService] Sending reply {{\"status\": \"Success\"}}",
    "chronyd[{pid}]: Selected source 169.254.169.123",
    "dhclient[{pid}]: XMT: Solicit on eth0, interval {ms}ms.",
    "CRON[{pid}]: (root) CMD (/usr/local/bin/rotate-logs.sh)",
]
NGINX_ERRORS = [
    "upstream timed out (110: Connection timed out) while reading response header from upstream",
    "connect() failed (111: Connection refused) while connecting to upstream",
    "client intended to send too large body: {n} bytes",
    "open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory)",
    "upstream prematurely closed connection while reading response header from upstream",
]
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
WORDS = (
    "red blue green black white large small cotton wool leather shoes shirt jacket lamp desk "
    "chair phone case cable charger book novel guide coffee tea mug bottle bag backpack watch "
    "ring garden hose drill saw hammer paint brush pillow blanket towel soap shampoo toy puzzle"
).split()
WORKER = [
    "job {id} picked up queue=emails attempt={n}",
    "job {id} finished in {ms}ms result=ok",
    "sent email template=order_confirmation to user {user}",
    "batch of {n} messages received from sqs queue=events",
    "job {id} failed: upstream returned {status}, will retry in {n}s",
    "heartbeat: {n} jobs running, {n2} queued",
]


class Gen:
    def __init__(self, rng, start):
        self.rng = rng
        self.t = start
        self.users = [rng.randrange(10_000, 99_999) for _ in range(400)]
        self.ips = [
            f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            for _ in range(300)
        ]
        self.ids = [rng.randrange(100_000, 9_999_999) for _ in range(3000)]
        self.hashes = ["%08x" % rng.getrandbits(32) for _ in range(20)]

    def tick(self):
        self.t += self.rng.expovariate(1 / 0.004)
        return self.t

    def ts(self, fmt):
        """`fmt` for strftime; `{ms}` in it becomes the milliseconds."""
        t = self.tick()
        return time.strftime(fmt, time.gmtime(t)).replace("{ms}", "%03d" % int((t % 1) * 1000))

    def token(self, n):
        """`n` random URL-safe base64 characters (session ids, cache keys)."""
        r = self.rng
        return "".join(r.choice(B64) for _ in range(n))

    def reqid(self):
        return "%016x%016x" % (self.rng.getrandbits(64), self.rng.getrandbits(64))

    def some_id(self):
        r = self.rng
        return r.choice(self.ids) if r.random() < 0.3 else r.randrange(100_000, 99_999_999)

    def user(self):
        r = self.rng
        return r.choice(self.users) if r.random() < 0.5 else r.randrange(1000, 9_999_999)

    def ip(self):
        r = self.rng
        if r.random() < 0.4:
            return r.choice(self.ips)
        return "%d.%d.%d.%d" % (r.randrange(1, 223), r.randrange(256), r.randrange(256), r.randrange(256))

    def query(self):
        r = self.rng
        if r.random() < 0.7:
            return ""
        words = "+".join(r.choice(WORDS) for _ in range(r.randrange(1, 4)))
        return "?q=%s&page=%d&sort=%s" % (words, r.randrange(1, 40), r.choice(["price", "rating", "new"]))

    def fill(self, template):
        r = self.rng
        return template.format(
            id=self.some_id(), user=self.user(), n=r.randrange(1, 12),
            n2=r.randrange(0, 40), amount="%d.%02d" % (r.randrange(5, 900), r.randrange(100)),
            status=r.choice(STATUSES), ms=int(r.lognormvariate(3.5, 1.0)), pid=r.randrange(300, 40000),
            ip=self.ip(), port=r.randrange(30000, 65000), hash=r.choice(self.hashes) * 5,
            uptime="%d.%06d" % (r.randrange(10000, 900000), r.randrange(1000000)),
        )

    def path(self):
        p = self.rng.choice(PATHS)
        p = p.replace("{id}", str(self.some_id())).replace("{hash}", self.rng.choice(self.hashes))
        return p + self.query()

    def json(self):
        r = self.rng
        level = r.choice(LEVELS)
        return (
            '{"ts":"%s","level":"%s","logger":"%s","request_id":"%s","trace_id":"%s",'
            '"user_id":%d,"client_ip":"%s","method":"%s","path":"%s","status":%d,'
            '"duration_ms":%.3f,"bytes":%d,"session":"%s","msg":"%s"}\n'
            % (
                self.ts("%Y-%m-%dT%H:%M:%S.{ms}Z"), level, r.choice(LOGGERS), self.reqid(),
                "%016x" % r.getrandbits(64), self.user(), self.ip(), r.choice(METHODS),
                self.path(), r.choice(STATUSES), r.lognormvariate(3.0, 1.0),
                int(r.lognormvariate(7.5, 1.5)), self.token(32), self.fill(r.choice(MESSAGES)),
            )
        )

    def access(self):
        r = self.rng
        return '%s - - [%s] "%s %s HTTP/1.1" %d %d "%s" "%s" rt=%.3f uct=%.3f rid=%s sid=%s\n' % (
            self.ip(), self.ts("%d/%b/%Y:%H:%M:%S +0000"), r.choice(METHODS), self.path(),
            r.choice(STATUSES), int(r.lognormvariate(7.5, 1.5)),
            "-" if r.random() < 0.6 else "https://shop.example.com" + self.path(),
            r.choice(AGENTS), r.lognormvariate(-3.5, 1.0), r.lognormvariate(-6, 0.5), self.reqid()[:20],
            self.token(26),
        )

    def java(self):
        r = self.rng
        level = r.choice(LEVELS)
        line = "%s %-5s [%s] [rid=%s span=%s user=%d] %s - %s\n" % (
            self.ts("%Y-%m-%d %H:%M:%S.{ms}"), level, "http-nio-8080-exec-%d" % r.randrange(1, 200),
            self.reqid()[:16], self.token(16), self.user(), r.choice(LOGGERS), self.fill(r.choice(MESSAGES)),
        )
        if r.random() < 0.05:
            line += "Hibernate: " + r.choice(SQL) + "\n"
        if level == "ERROR" and r.random() < 0.5:
            line += "\n".join(STACK) + "\n"
        return line

    def worker(self):
        r = self.rng
        u = self.reqid()
        return "%s %s worker-%d rid=%s msg_id=%s-%s-%s-%s-%s %s\n" % (
            self.ts("%Y-%m-%dT%H:%M:%S.{ms}Z"), r.choice(LEVELS), r.randrange(1, 16),
            self.reqid()[:12], u[:8], u[8:12], u[12:16], u[16:20], u[20:], self.fill(r.choice(WORKER)),
        )

    def syslog(self):
        return "%s ip-10-0-%d-%d %s [%s]\n" % (
            self.ts("%b %d %H:%M:%S"), 12, 34, self.fill(self.rng.choice(SYSLOG)), self.token(14),
        )

    def nginx_error(self):
        r = self.rng
        return (
            '%s [error] %d#%d: *%d %s, client: %s, server: shop.example.com, request: "%s %s HTTP/1.1", '
            'upstream: "http://10.0.%d.%d:8080%s", host: "shop.example.com", request_id: "%s"\n'
            % (
                self.ts("%Y/%m/%d %H:%M:%S"), r.randrange(1000, 9999), r.randrange(0, 4),
                r.randrange(1, 10**7), self.fill(r.choice(NGINX_ERRORS)), self.ip(),
                r.choice(METHODS), self.path(), r.randrange(1, 8), r.randrange(2, 250), self.path(),
                self.reqid(),
            )
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("size_mb", type=float)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()

    total = int(args.size_mb * 1_000_000)
    now = time.time()
    for index, (name, share, kind) in enumerate(FILES):
        rng = random.Random(args.seed * 100 + index)
        gen = Gen(rng, start=1_790_000_000 + index * 86_400)
        produce = getattr(gen, kind)
        path = os.path.join(args.out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        want = int(total * share)
        written = 0
        with open(path, "w", encoding="ascii") as out:
            while written < want:
                chunk = "".join(produce() for _ in range(2000))
                if written + len(chunk) > want:
                    chunk = chunk[: want - written]
                out.write(chunk)
                written += len(chunk)
        mtime = now - index * 3600
        os.utime(path, (mtime, mtime))
        print(f"{path}: {written} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
