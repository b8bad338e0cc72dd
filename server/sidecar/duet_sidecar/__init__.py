"""duet verifier sidecar: serves a Llama target over a small framed socket protocol.

Backends: `torch` (this package's own Llama-3.2 in PyTorch, CPU or CUDA) and `ttnn`
(tt-metal's models/tt_transformers Llama on a Tenstorrent Wormhole; untested on hardware).
See PROTOCOL.md for the wire format and README.md for running it.
"""

PROTOCOL_VERSION = 1
