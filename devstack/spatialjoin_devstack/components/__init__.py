"""The local stack's components: each installs, starts, checks and stops one real server."""
