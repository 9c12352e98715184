//! Established TCP connections per local port, from the kernel's tables (`/proc/net/tcp`,
//! `/proc/net/tcp6`), for the `wait_connections` drain step.

use std::path::Path;

pub const PROC_TABLES: &[&str] = &["/proc/net/tcp", "/proc/net/tcp6"];

/// `01` is TCP_ESTABLISHED in the kernel's numbering.
const ESTABLISHED: &str = "01";

/// Established connections whose local port is one of `ports`, over all `tables`. A table that
/// cannot be read (no IPv6) counts as empty.
pub fn established_on(ports: &[u16], tables: &[&str]) -> usize {
    tables
        .iter()
        .filter_map(|table| std::fs::read_to_string(Path::new(table)).ok())
        .map(|text| count_in_table(&text, ports))
        .sum()
}

fn count_in_table(text: &str, ports: &[u16]) -> usize {
    text.lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            let port = local
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
            state == Some(ESTABLISHED) && port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0050 0100007F:D3E2 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:D3E2 0100007F:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:01BB 0100007F:D3E4 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0 0 0 0 0 0
";

    #[test]
    fn counts_established_by_local_port() {
        assert_eq!(
            count_in_table(SAMPLE, &[80]),
            1,
            "the listener and the client side do not count"
        );
        assert_eq!(
            count_in_table(SAMPLE, &[443]),
            0,
            "TIME_WAIT does not count"
        );
        assert_eq!(count_in_table(SAMPLE, &[80, 54242]), 2);
        assert_eq!(count_in_table("garbage\nmore garbage", &[80]), 0);
    }
}
