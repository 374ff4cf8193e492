"""Beyond express-session: what its users keep asking for, built on session_demo's public API.

One module per capability; session_demo knows nothing of them.

    extras.concurrency     no lost updates: LockingSessionMiddleware, MergingSessionMiddleware;
                           TombstoneStore: a logged-out session cannot be saved back
    extras.wsgi            SessionWSGIMiddleware, for any WSGI application
    extras.bounded_store   BoundedMemoryStore: a memory store that cannot leak or be flooded
    extras.sqlite_store    SQLiteStore: sessions that survive a restart, shared by processes
    extras.redis_store     RedisStore: connect-redis's sessions in Redis, shared by machines (and Node apps)
    extras.lean_handler    LeanRequestHandler: less work per request (plain heads without the email package)
"""
