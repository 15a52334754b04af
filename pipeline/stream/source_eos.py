"""The end of stream the supervisor sends for a lossless source that crashed before sending its own.

Without it the broker would wait for that stream forever and the graph would never drain. The
supervisor speaks for the source: the source's identity and role, and an EOS sealed with the run's
seal key, status "failed", so the sinks know the stream is cut short.
"""

from __future__ import annotations

import logging

import zmq

from pipeline.errors import GhostboxError
from pipeline.stream import protocol as P
from pipeline.stream.config import GraphConfig
from pipeline.stream.endpoints import open_socket
from pipeline.stream.provenance import Seal
from pipeline.stream.security import PeerAuth

log = logging.getLogger(__name__)


def send_eos_for(graph: GraphConfig, source_id: str, why: str) -> None:
    """Send the EOS a crashed lossless source could not send, so the graph can drain."""
    auth = PeerAuth.from_graph(graph, role="source")  # it speaks for a source
    ctx = zmq.Context()
    try:
        sock = open_socket(ctx, zmq.DEALER, graph.endpoints.sources.url or "", bind=False, auth=auth,
                           identity=source_id.encode(), linger_ms=0, edge="sources")
        fields = {"total": None, "status": "failed"}
        seal = Seal.from_file(graph.seal_path()).eos(source_id, fields)
        message = P.control(P.EOS, source_id, **fields, seal=seal, detail=why[:500])
        for _ in range(5):
            sock.send_multipart(message, flags=zmq.NOBLOCK)
            if sock.poll(1000):
                reply = P.decode(sock.recv_multipart())
                if reply.type == P.ACK:
                    return
        log.error("source %s: the broker did not acknowledge the EOS sent for it", source_id)
    except (zmq.ZMQError, P.ProtocolError, GhostboxError) as exc:
        log.error("source %s: cannot end its stream (%s)", source_id, exc)
    finally:
        auth.stop()
        ctx.destroy(linger=0)
