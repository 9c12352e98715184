# Shared by the benchmark scripts (sourced, not run): the emulator's Python environment and
# static credentials, a scratch directory removed on exit together with the processes the script
# started, and the emulator started on a free port of 127.0.0.1.
#
#   bench_init NAME      venv, py, credentials, $work; the exit trap
#   bench_track PID      stop PID (SIGTERM, then wait) on exit, before the ones tracked earlier
#   start_emulator       starts it, tracked; sets emulator_pid and endpoint
#   alive PID            whether a child still runs (not a zombie)
#   stop_child PID WHAT SECS
#                        SIGTERM, then wait up to SECS; sets exit_code (its status, or "timeout")
# Needs $repo (the repository root).

bench_pids=()

bench_init() {
    bench_name="$1"
    venv="$("$repo/tests/emulator/setup.sh")"
    py="$venv/bin/python"
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
    unset AWS_PROFILE AWS_SESSION_TOKEN RUST_LOG
    # Static credentials above; keep boto3 and lifeguard from probing a real metadata service.
    export AWS_EC2_METADATA_DISABLED=true
    work="$(mktemp -d "${TMPDIR:-/tmp}/lifeguard-$bench_name.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_track() {
    bench_pids+=("$1")
}

bench_cleanup() {
    local i pid
    for ((i = ${#bench_pids[@]} - 1; i >= 0; i--)); do
        pid="${bench_pids[$i]}"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$work"
}

# kill -0 also succeeds on an exited child that has not been waited for yet (a zombie), so look
# at its state instead.
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

start_emulator() {
    # run.sh execs the interpreter, so $! is the emulator process itself (its CPU can be read).
    "$repo/tests/emulator/run.sh" --host 127.0.0.1 --port 0 --port-file "$work/port" \
        >"$work/emulator.log" 2>&1 &
    emulator_pid=$!
    bench_track "$emulator_pid"
    local _
    for _ in $(seq 600); do
        [[ -s "$work/port" ]] && break
        if ! alive "$emulator_pid"; then
            echo "$bench_name: the emulator did not start:" >&2
            cat "$work/emulator.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ ! -s "$work/port" ]]; then
        echo "$bench_name: the emulator did not report its port within 60 s" >&2
        exit 1
    fi
    endpoint="http://127.0.0.1:$(cat "$work/port")"
}

stop_child() {
    local pid="$1" what="$2" secs="$3" _
    kill -TERM "$pid"
    exit_code=0
    for _ in $(seq "$((secs * 10))"); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "$bench_name: the $what did not exit within $secs s of SIGTERM" >&2
        exit_code=timeout
    else
        wait "$pid" || exit_code=$?
    fi
}
