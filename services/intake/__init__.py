"""Intake: the citizen app's door. Takes reports and publishes ReportReceived."""
