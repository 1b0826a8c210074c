"""Backup and restore of everything the coordinator keeps in Redis (see docs/BACKUP.md)."""
