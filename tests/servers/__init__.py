"""Real backend servers for the tests, one plugin module per backend."""

import contextlib
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """What every test server shares: a process the tests started, stopped, crashed, frozen
    and resumed by its own pid, and the tail of its log for failure messages.

    A subclass sets `process` when it starts one, `log`, and `stop_seconds`.
    """

    process: subprocess.Popen[bytes] | None
    log: Path
    stop_seconds = 10.0

    def stop(self) -> None:
        """SIGTERM: a graceful stop, as a service manager would do it."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the process dies at once (what the kernel already has survives)."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and the kernel still accepts new ones; no answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused process handles SIGTERM only once resumed
        process.send_signal(signum)
        try:
            process.wait(self.stop_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.stop_seconds)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"
