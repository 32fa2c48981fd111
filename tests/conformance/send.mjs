// Drives the Journeyman API with a real SDK, unchanged: the scenario of
// tests/api/test_sdk_conformance.py (`SCENARIO` there says the same in Python).
//
//   node send.mjs segment|rudderstack BASE_URL WRITE_KEY PREFIX
//
// Every call is queued and sent in one batch (as the SDKs do), then the client is
// flushed and closed; any error makes the exit status 1.
import { Analytics as SegmentAnalytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';

const [sdk, baseUrl, writeKey, p] = process.argv.slice(2);

const calls = [
  ['page', { anonymousId: `${p}anon-1`, name: 'Pricing', category: 'Docs', properties: { url: 'https://shop.example/pricing' } }],
  ['screen', { userId: `${p}u2`, name: 'Home' }],
  ['identify', { userId: `${p}u1`, anonymousId: `${p}anon-1`, traits: { email: `${p}u1@example.com`, plan: 'pro' } }],
  ['track', { userId: `${p}u1`, event: 'cart_abandoned', properties: { cart_id: 'c1', cart_total: 42 } }],
  ['alias', { userId: `${p}u1`, previousId: `${p}anon-2` }],
  ['track', { userId: `${p}u2`, event: 'cart_abandoned', properties: { cart_id: 'c2', cart_total: 7 } }],
];

async function segment() {
  const errors = [];
  const client = new SegmentAnalytics({
    writeKey,
    host: baseUrl,
    flushAt: calls.length,
    flushInterval: 60000,
    maxRetries: 0,
  });
  client.on('error', (error) => errors.push(error));
  for (const [method, message] of calls) client[method](message);
  await client.closeAndFlush({ timeout: 20000 });
  if (errors.length) throw new Error(`segment: ${errors.map(String).join('; ')}`);
}

async function rudderstack() {
  const errors = [];
  const client = new RudderAnalytics(writeKey, {
    dataPlaneUrl: baseUrl,
    flushAt: calls.length + 1,
    flushInterval: 60000,
    retryCount: 0,
    errorHandler: (error) => errors.push(error),
    logLevel: 'error',
  });
  for (const [method, message] of calls) client[method](message);
  await new Promise((resolve) => client.flush(() => resolve()));
  if (errors.length) throw new Error(`rudderstack: ${errors.map(String).join('; ')}`);
}

try {
  await (sdk === 'segment' ? segment() : rudderstack());
} catch (error) {
  console.error(String(error));
  process.exit(1);
}
