// A hostile client for load tests, run as its own process so it never shares an event loop
// with what it measures: N WebSocket connections to URL that never read a byte and send pings
// as fast as their sockets take them (ws's own queue kept under 1 MiB); a dropped connection
// reconnects after 200 ms. Prints "flooding" once all N are open; stats on SIGTERM to stderr.
//   node tools/load/flooder.mjs ws://127.0.0.1:PORT/ws N [LOCAL_ADDRESS]
// LOCAL_ADDRESS (e.g. 127.0.0.2) makes it a different client address from the rest of the test.
import WebSocket from 'ws';

const [url, nArg, localAddress] = process.argv.slice(2);
const n = Math.min(256, Number(nArg));
const ping = JSON.stringify({ type: 'ping', t: 123456789 });
let open = 0;
let announced = false;
let dropped = 0;

function connect() {
  const ws = new WebSocket(url, localAddress ? { localAddress } : {});
  ws.on('error', () => {});
  ws.on('open', () => {
    ws._socket.pause(); // never read: replies pile up on the gateway's side
    open++;
    if (!announced && open >= n) {
      announced = true;
      process.stdout.write('flooding\n');
    }
    const pump = () => {
      for (let j = 0; j < 500 && ws.readyState === 1 && ws.bufferedAmount < 1 << 20; j++) ws.send(ping);
      if (ws.readyState === 1) setTimeout(pump, 1);
    };
    pump();
  });
  ws.on('close', () => {
    dropped++;
    setTimeout(connect, 200);
  });
}

for (let i = 0; i < n; i++) connect();
process.on('SIGTERM', () => {
  process.stderr.write(`flooder: ${dropped} connection(s) dropped by the gateway\n`);
  process.exit(0);
});
