# Client calls for mesh-proxy's two-sidecar test, run in the client pod (so captured by its
# sidecar). `python3 client.py <what> [args]`; prints what the caller would see.
import hashlib, os, socket, sys, time, urllib.request

what = sys.argv[1]
if what == "get":
    url = sys.argv[2]
    headers = dict(h.split(":", 1) for h in sys.argv[3:])
    request = urllib.request.Request(url, headers=headers)
    try:
        print(urllib.request.urlopen(request, timeout=10).read().decode())
    except urllib.error.HTTPError as e:
        print(f"status={e.code} flags={e.read().decode()[:200]}")
elif what == "keepalive":
    # Several requests on one connection (HTTP/1.1 keep-alive).
    import http.client
    conn = http.client.HTTPConnection(sys.argv[2], int(sys.argv[3]), timeout=10)
    out, ports = [], set()
    for i in range(5):
        conn.request("GET", f"/k{i}")
        response = conn.getresponse()
        ports.add(conn.sock.getsockname()[1])
        out.append(f"{response.status}:{response.read().decode().split(' path=')[1]}")
    print(" ".join(out), "connections:", len(ports))
elif what == "post":
    # A large body, streamed in chunks: the server answers with its size and digest.
    size = int(sys.argv[3])
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    def chunks():
        left = size
        while left:
            piece = block[: min(left, len(block))]
            digest.update(piece)
            left -= len(piece)
            yield piece
    request = urllib.request.Request(sys.argv[2], data=chunks(), method="POST")
    answer = urllib.request.urlopen(request, timeout=60).read().decode()
    print(answer, "expected", f"size={size} sha256={digest.hexdigest()}")
elif what == "websocket":
    host, port = sys.argv[2], int(sys.argv[3])
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    status = head.split(b"\r\n")[0].decode()
    rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(b"frame-1")
    while len(rest) < len(b"echo:frame-1"):
        rest += s.recv(4096)
    print(status, "|", rest.decode())
elif what == "raw":
    # Bytes as given (Python escapes allowed), then the status line of the answer.
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    data = sys.argv[4].encode().decode("unicode_escape").encode()
    if len(sys.argv) > 5:
        data = data.replace(b"PAD", b"x" * int(sys.argv[5]))
    try:
        s.sendall(data)
    except OSError:
        pass
    answer = b""
    try:
        while b"\r\n" not in answer:
            more = s.recv(4096)
            if not more:
                break
            answer += more
    except OSError:
        pass
    print(answer.split(b"\r\n")[0].decode() or "closed")
elif what == "server-first":
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    greeting = s.recv(1024).decode().strip()
    s.sendall(b"ping")
    print(greeting, "|", s.recv(1024).decode())
elif what == "grpc":
    import grpc
    channel = grpc.insecure_channel(sys.argv[2])
    unary = channel.unary_unary("/test.Echo/Unary")(b"hi", timeout=10)
    parts = list(channel.unary_stream("/test.Echo/Stream")(b"s", timeout=10))
    print(unary.decode(), "|", ",".join(p.decode() for p in parts))
elif what == "load":
    # Requests back to back on one keep-alive connection for `seconds`; prints status counts
    # and the x-route values seen, in order of first appearance.
    import http.client
    host, port, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    conn = http.client.HTTPConnection(host, port, timeout=10)
    counts, routes = {}, []
    end = time.time() + seconds
    while time.time() < end:
        try:
            conn.request("GET", "/load")
            response = conn.getresponse()
            body = response.read().decode()
            status = str(response.status)
            route = body.split("route=")[1].split(" ")[0] if "route=" in body else "?"
            if route not in routes:
                routes.append(route)
        except Exception as e:
            status = type(e).__name__
            conn = http.client.HTTPConnection(host, port, timeout=10)
        counts[status] = counts.get(status, 0) + 1
    print(sorted(counts.items()), routes)
