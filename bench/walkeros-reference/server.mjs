// walkerOS reference server for bench/http.sh.
//
// The express source package (@walkeros/server-source-express) is not on the registry this
// machine reaches, so this reproduces its POST path with the parts it is made of: Express 5,
// express.json({limit: '1mb', type: ['application/json', 'text/plain']}), the walkerOS
// collector (startFlow), and its default respond-first answer {success, timestamp}; events are
// then pushed one after another, as the source does. The destination serializes each event
// (JSON.stringify), like weir's blackhole does.
import express from 'express';
import { startFlow } from '@walkeros/collector';

const port = Number(process.argv[2] || 8090);
const { elb } = await startFlow({
  destinations: {
    blackhole: { code: { type: 'blackhole', config: {}, push: (event) => { JSON.stringify(event); } } },
  },
});

const app = express();
app.disable('x-powered-by');
app.use(express.json({ limit: '1mb', type: ['application/json', 'text/plain'] }));
app.post('/collect', (req, res) => {
  const body = req.body;
  const events = Array.isArray(body) ? body : Array.isArray(body?.batch) ? body.batch : [body];
  res.json({ success: true, timestamp: Date.now() });
  let chain = Promise.resolve();
  for (const event of events) chain = chain.then(() => elb(event)).catch(() => {});
});
app.listen(port, '127.0.0.1', () => console.log(`walkerOS reference listening on 127.0.0.1:${port}`));
