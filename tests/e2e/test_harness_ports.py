"""The harness's own guarantees that every e2e test relies on."""

from harness import free_port


def test_free_port_never_hands_out_a_port_twice():
    # CI once gave a sidecar the same port for --listen and --admin ("Address already in use").
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
