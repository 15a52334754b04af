"""Where frames come from: files, folders, videos (and, for the streaming stage, cameras)."""
