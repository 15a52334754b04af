"""The `ghostbox` command line."""
