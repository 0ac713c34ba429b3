// counter-js: a Fog app in JavaScript that keeps a visit count in `wasi:keyvalue`.
//
// GET / says hello; POST /count adds one to the count and returns it; GET /count returns it.
// The count lives in the app's key-value state, so every request and every replica sees the
// same number.
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';

async function handle(request) {
  const path = new URL(request.url).pathname;
  if (path === '/') {
    return new Response('Hello from JavaScript on Fog\n', {
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  }
  if (path === '/count') {
    const bucket = open('');
    let visits;
    if (request.method === 'POST') {
      visits = increment(bucket, 'visits', 1n);
    } else {
      // `increment` stores the number as decimal text.
      const stored = bucket.get('visits');
      visits = stored ? new TextDecoder().decode(stored) : '0';
    }
    return new Response(`count ${visits}\n`, {
      headers: { 'content-type': 'text/plain; charset=utf-8' },
    });
  }
  return new Response(`nothing at ${path}\n`, { status: 404 });
}

addEventListener('fetch', (event) => event.respondWith(handle(event.request)));
