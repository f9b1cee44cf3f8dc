"""
Reading Prometheus metrics in tests as Prometheus reads them: the
exposition text parsed by ``prometheus_client.parser``, and a scrape over
TLS with the certificate of the scraper.
"""

import socket

from prometheus_client.parser import text_string_to_metric_families


def samples(text):
    """
    Every sample of the exposition ``text``: (name, labels, value).
    """
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(text, name, **labels):
    """
    The sum of the samples called ``name`` whose labels include
    ``labels``; None when there is none.
    """
    found = [v for n, l, v in samples(text)
             if n == name and all(l.get(k) == w for k, w in labels.items())]
    return sum(found) if found else None


def scrape(port, context, server_hostname, path="/metrics"):
    """
    ``GET path`` over TLS at 127.0.0.1:``port`` with ``context`` (an
    ``ssl.SSLContext``), believing the server's certificate for
    ``server_hostname``. :return: (status, body text).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as s:
            s.sendall(b"GET %s HTTP/1.0\r\nHost: scraper\r\n\r\n"
                      % (path.encode("ascii"),))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8")
