"""Dispatch: turns reports into incidents, offers them to the nearest responder and keeps
the 1-3-5 clocks."""
