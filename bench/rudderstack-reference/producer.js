// The Node SDK sending the calls walkerOS's RudderStack destination makes for the benchmark
// event (a track with the user's id and session), as fast as the SDK takes them. At most
// IN_FLIGHT calls wait for their batch: the SDK re-serializes its whole queue on every call
// (to check maxQueueSize), so a long queue makes each call slower: 40 (two batches) was its
// fastest here (20: 1.6 k/s, 40: 8.0 k/s, 60: 6.7 k/s, 100: 5.1 k/s, 1000: 0.8 k/s).
// Prints one JSON line like weir's collector benchmark.
import Analytics from '@rudderstack/rudder-sdk-node';

const [url, total] = [process.argv[2], Number(process.argv[3])];
const client = new Analytics('bench-write-key', { dataPlaneUrl: url, logLevel: 'error' });
const IN_FLIGHT = Number(process.argv[4] || 40);
const started = process.hrtime.bigint();
let sent = 0;
let done = 0;
let failed = 0;
let pumping = false;

await new Promise((resolve) => {
  const pump = () => {
    pumping = false;
    while (sent < total && sent - done < IN_FLIGHT) {
      sent++;
      client.track(
        { userId: 'us3r', anonymousId: 's3ss10n', event: 'page view', properties: {}, timestamp: new Date() },
        (error) => {
          if (error) failed++;
          done++;
          if (done === total) resolve();
          else if (!pumping && sent < total && sent - done < IN_FLIGHT / 2) {
            pumping = true;
            setImmediate(pump);
          }
        },
      );
    }
  };
  pump();
  // The tail below flushAt goes on flush(), not after flushInterval.
  const tail = setInterval(() => {
    if (sent === total) {
      clearInterval(tail);
      client.flush();
    }
  }, 5);
});
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
if (failed > 0) throw new Error(`${failed} calls failed`);
console.log(
  JSON.stringify({
    events: total,
    seconds,
    events_per_second: total / seconds,
    peak_rss_mib: process.resourceUsage().maxRSS / 1024,
  }),
);
