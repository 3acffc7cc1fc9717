"""Models arrive with this part's issue; the app is registered so migrations and settings stay stable."""
