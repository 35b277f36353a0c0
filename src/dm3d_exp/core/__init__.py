"""Framework-free DM3D algorithm core (METHOD.md sections 2-9).

Imports only torch, numpy and the standard library. A prunable layer's weight is seen as a canonical
tensor of shape [K, Cout, Cin] (K kernel taps; Linear has K = 1); masks are boolean tensors of that
shape with True = weight kept.
"""
