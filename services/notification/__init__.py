"""Notification: delivers offers and updates to responders, reporters and dispatchers."""
