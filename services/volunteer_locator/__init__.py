"""Volunteer-locator: the responder registry, duty state, live positions and the nearest search."""
