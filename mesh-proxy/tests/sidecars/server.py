# The server pod's apps for mesh-proxy's two-sidecar test, on every address (the sidecar calls
# them on the pod's address, as Istio does since 1.10): HTTP/1.1 on 8080 (keep-alive, echoes
# who called and how, streams POST bodies back as a size and digest, and upgrades to an
# echoing WebSocket-like byte stream), a server-first TCP protocol on 3306, and gRPC (unary
# and server streaming) on 9090.
import concurrent.futures, hashlib, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body):
        body = body.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("upgrade", "websocket")
            self.send_header("connection", "upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    return
                self.wfile.write(b"echo:" + data)
                self.wfile.flush()
        if self.path == "/slow":
            time.sleep(1.5)
        xfcc = self.headers.get("x-forwarded-client-cert", "none")
        route = self.headers.get("x-route", "none")
        self.reply(f"from={self.client_address[0]} xfcc={xfcc} route={route} path={self.path}")

    def do_POST(self):
        digest, size = hashlib.sha256(), 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                n = int(self.rfile.readline().strip(), 16)
                if n == 0:
                    self.rfile.readline()
                    break
                chunk = self.rfile.read(n)
                self.rfile.readline()
                digest.update(chunk)
                size += len(chunk)
        else:
            left = int(self.headers.get("content-length", "0"))
            while left:
                chunk = self.rfile.read(min(left, 65536))
                digest.update(chunk)
                size += len(chunk)
                left -= len(chunk)
        self.reply(f"size={size} sha256={digest.hexdigest()}")

def server_first():
    listener = socket.create_server(("0.0.0.0", 3306))
    while True:
        conn, _ = listener.accept()
        def serve(conn):
            conn.sendall(b"greeting from the server\n")
            data = conn.recv(1024)
            conn.sendall(b"echo:" + data)
            conn.close()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

def grpc_server():
    import grpc
    def unary(request, context):
        return b"unary:" + request
    def stream(request, context):
        for i in range(5):
            yield b"part%d:" % i + request
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("0.0.0.0:9090")
    server.start()
    return server

threading.Thread(target=server_first, daemon=True).start()
keep = grpc_server()
http = ThreadingHTTPServer(("0.0.0.0", 8080), App)
print("ready", flush=True)
http.serve_forever()
