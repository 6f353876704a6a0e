"""The connected clients of this process, and the end of those whose token died.

A socket authenticates once, at its handshake; its token may be revoked (logout) or
expire while it stays connected. Every `CHECK_SECONDS`, one greenlet asks Redis, in one
round trip, which of this process's tokens were revoked, and disconnects their sockets
(and those whose token expired), so a logged-out client stops receiving events within
seconds.
"""

import logging
import time

from aisystant_server.outages import log_failure
from aisystant_server.security import REVOKED_KEY

log = logging.getLogger(__name__)
CHECK_SECONDS = 2


class Sessions:
    def __init__(self, sio, registry):
        self.sio, self.redis = sio, registry["redis"]
        self._sessions = {}  # sid -> session (a dict the handlers read and update)

    def open(self, sid, user, claims, language, address):
        self._sessions[sid] = {"user_id": user["id"], "username": user["username"], "jti": claims["jti"],
                               "exp": claims["exp"], "language": language, "address": address, "rooms": set()}

    def get(self, sid):
        return self._sessions.get(sid)

    def forget(self, sid, *reason):
        self._sessions.pop(sid, None)

    def start(self):
        self.sio.start_background_task(self._check_forever)

    def _check_forever(self):
        while True:
            self.sio.sleep(CHECK_SECONDS)
            try:
                self.check()
            except Exception as error:  # noqa: BLE001 - the check must outlive a Redis outage
                log_failure(log, error, "could not check the sockets' tokens")

    def check(self):
        """Disconnect the sockets whose token was revoked or has expired."""
        sessions = list(self._sessions.items())
        if not sessions:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _, session in sessions:
            pipe.exists(REVOKED_KEY.format(session["jti"]))
        now = time.time()
        for (sid, session), revoked in zip(sessions, pipe.execute()):
            if revoked or session["exp"] <= now:
                self.forget(sid)
                self.sio.disconnect(sid)
