"""Start-up and shut-down: connect and check that Tarantool is set up for kv, or keep
connecting in the background while it does not answer; close."""

import asyncio
import contextlib

from asynctnt.exceptions import TarantoolDatabaseError
from loguru import logger

from kv.adapters.tarantool.calls import FUNCTIONS, Calls
from kv.adapters.tarantool.errors import FAILURES, TarantoolSetupError, describe
from kv.domain.errors import Failure

INSTANCE_FILE = "deploy/tarantool/init.lua"
# Pause between two reconnection attempts while Tarantool is away: how soon after its return
# requests succeed again (asynctnt logs a warning per failed attempt).
RECONNECT_SECONDS = 0.5

# Tarantool's system views (ids fixed since 1.7) and their index on `name`. A user sees in
# them only the objects it has been granted something on.
_VSPACE = 281
_VFUNC = 297
_BY_NAME = 2


class Startup(Calls):
    """Connecting at start-up, or later in the background, checking the set-up, and closing."""

    async def start(self) -> None:
        """Connect and check the set-up within the timeout; raise TarantoolSetupError when
        Tarantool answers but is not set up for kv. When it does not answer, calls fail at
        once (503) while a task keeps connecting, and succeed once it has."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._connection.connect()
            await self._check_setup()
        except TarantoolSetupError:
            raise
        except TarantoolDatabaseError as exc:
            raise self._refused(exc) from exc
        except FAILURES as exc:
            logger.warning(
                "Tarantool at {} does not answer ({}); kv answers 503 until it does, and "
                "keeps connecting (run: tarantool {})",
                self._address,
                describe(exc),
                INSTANCE_FILE,
            )
            self._unready = (Failure.UNREACHABLE, exc)
            self._connecting = self._loop.create_task(self._connect_later())

    async def _connect_later(self) -> None:
        while True:
            try:
                await self._connection.connect()  # retries every RECONNECT_SECONDS by itself
                await self._check_setup()
            except TarantoolSetupError as exc:
                self._misconfigured(exc)
                return
            except TarantoolDatabaseError as exc:
                self._misconfigured(self._refused(exc))
                return
            except FAILURES:
                await asyncio.sleep(RECONNECT_SECONDS)
            else:
                self._unready = None
                logger.info("connected to Tarantool at {}", self._address)
                return

    def _misconfigured(self, error: TarantoolSetupError) -> None:
        # kv is already serving: it keeps answering 503 (and /ready 503) and says why, rather
        # than exit in the middle of its work; a restart after the fix picks it up.
        logger.critical("kv cannot use Tarantool: {}", error)
        self._unready = (Failure.REFUSED, error)

    def _refused(self, exc: TarantoolDatabaseError) -> TarantoolSetupError:
        return TarantoolSetupError(
            f"Tarantool at {self._address} refused the connection ({exc.message}); check the "
            f"user and password in KV_TARANTOOL_URL against {INSTANCE_FILE}'s "
            "KV_TARANTOOL_USER and KV_TARANTOOL_PASSWORD"
        )

    async def _check_setup(self) -> None:
        """Check that the space and every kv function are there for us."""
        names = [f"{self._space}_{suffix}" for suffix in FUNCTIONS]
        spaces, *functions = await asyncio.gather(
            self._connection.select(_VSPACE, (self._space,), index=_BY_NAME),
            *(self._connection.select(_VFUNC, (name,), index=_BY_NAME) for name in names),
        )
        hint = (
            f"start Tarantool with {INSTANCE_FILE} (KV_TARANTOOL_SPACE={self._space}) and "
            "connect as the user it creates (kv:kv by default)"
        )
        if not spaces:
            raise TarantoolSetupError(
                f"Tarantool at {self._address} has no space {self._space!r} this user can "
                f"use; {hint}"
            )
        missing = [name for name, rows in zip(names, functions, strict=True) if not rows]
        if missing:
            raise TarantoolSetupError(
                f"Tarantool at {self._address} lacks the function(s) {', '.join(missing)} "
                f"(or this user may not call them); {hint}"
            )

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        try:
            async with asyncio.timeout(self._timeout):
                await self._connection.disconnect()
        except TimeoutError:
            self._connection.close()  # without waiting for the socket to close
