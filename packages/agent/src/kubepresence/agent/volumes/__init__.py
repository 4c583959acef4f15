"""Exporting the app container's volumes to the workstation (raw SFTP)."""
