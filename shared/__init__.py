"""The library the four services share: events, Kafka, auth, settings, database and logging.

It never imports a service and is never run on its own.
"""
