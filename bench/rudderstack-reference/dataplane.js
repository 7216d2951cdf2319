// A local RudderStack data plane for the benchmark: answers every POST with 200 and counts
// the messages it received (un-gzipped, by their "messageId" keys, without parsing). GET
// /count answers the running total. Both weir and the Node SDK send to it.
import http from 'node:http';
import zlib from 'node:zlib';

const port = Number(process.argv[2]);
const marker = Buffer.from('"messageId"');
let messages = 0;

http
  .createServer((request, response) => {
    if (request.method === 'GET') {
      response.end(String(messages));
      return;
    }
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      let body = Buffer.concat(chunks);
      if (request.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
      for (let at = body.indexOf(marker); at !== -1; at = body.indexOf(marker, at + marker.length)) messages++;
      response.end('OK');
    });
  })
  .listen(port, '127.0.0.1');
