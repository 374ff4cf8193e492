"""Beyond express-session: what its users keep asking for, built on session_demo's public API.

One module per capability; session_demo knows nothing of them.

    session_demo_extras.concurrency     no lost updates: LockingSessionMiddleware, MergingSessionMiddleware;
                           TombstoneStore: a logged-out session cannot be saved back
    session_demo_extras.wsgi            SessionWSGIMiddleware, for any WSGI application (Flask, under gunicorn or waitress)
    session_demo_extras.asgi            SessionASGIMiddleware, for any ASGI application (Starlette's, FastAPI's request.session)
    session_demo_extras.bounded_store   BoundedMemoryStore: a memory store that cannot leak or be flooded
    session_demo_extras.sqlite_store    SQLiteStore: sessions that survive a restart, shared by processes
    session_demo_extras.redis_store     RedisStore: connect-redis's sessions in Redis, shared by machines (and Node apps)
    session_demo_extras.frontend        GuardedRequestHandler, GuardedHTTPServer: the guards of a front end a network can reach
    session_demo_extras.lean_handler    LeanRequestHandler (a GuardedRequestHandler): less work per request (plain heads without the email package)
"""
