"""The sync server: auth state machine, Autobahn glue, engine, web resources."""
