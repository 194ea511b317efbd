"""A byte relay that runs as another user: msixd sees that user's credentials on every relayed connection.

    setpriv --reuid=U --regid=G ... python3 relay.py LISTEN TARGET

Listens on the Unix socket LISTEN (created by this process, so the test, as root, can connect),
and for each connection opens one to the Unix socket TARGET as the user it runs as (SO_PEERCRED
is taken at connect time) and copies bytes both ways. Standard library only: it runs with the
system python3 as a user that cannot read the test's virtual environment.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client: socket.socket, target: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(target)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(listen: str, target: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(listen)
    listener.listen(16)
    print("ready", os.getuid(), flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
