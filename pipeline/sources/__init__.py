"""Where frames come from: image and video files, folders and globs (`media_files`), and the stream's
frame readers (`frame_reader`: the contract; `file_reader`, `synth_reader`, `capture_reader` for
cameras and RTSP/HTTP with reconnect back-off; `open_reader` picks one per kind), with `resize` and
the `frame_buffer` between a reading thread and a sender. No sockets: the ZeroMQ stage is
`pipeline.stream.source_stage`."""
