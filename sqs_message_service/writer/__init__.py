"""The queue-writer's parts: server.py assembles them into the app, message.py's handlers use the service."""
