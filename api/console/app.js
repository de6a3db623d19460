// The console's shell: sign-in with a namespace key, the hash router, and the one live feed all views share.

import {ApiError, api, authorization, session} from './api.js';
import {activationsView} from './activations.js';
import {detailView} from './detail.js';
import {actionView, entitiesView} from './entities.js';
import {deadLettersView, feedsView, invokersView} from './operations.js';
import {LiveFeed} from './stream.js';

const feed = new LiveFeed();
let dispose = () => {};

const $ = (id) => document.getElementById(id);

/** A name from the address bar; a malformed escape is shown as typed (and then refused as a name). */
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

const ROUTES = [
  [/^#\/activation\/([0-9a-f]{32})$/, (root, m) => detailView(root, {id: m[1]}), 'activations'],
  [/^#\/action\/(.+)$/, (root, m) => actionView(root, {name: decoded(m[1])}), 'entities'],
  [/^#\/entities$/, (root) => entitiesView(root), 'entities'],
  [/^#\/feeds$/, (root) => feedsView(root), 'feeds'],
  [/^#\/deadletters$/, (root) => deadLettersView(root), 'deadletters'],
  [/^#\/invokers$/, (root) => invokersView(root), 'invokers'],
  [/^.*$/, (root) => activationsView(root, {feed}), 'activations'],
];

function route() {
  if (!session.key) return;
  dispose();
  const root = $('view');
  for (const [pattern, show, tab] of ROUTES) {
    const match = location.hash.match(pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('current', a.dataset.view === tab);
    dispose = show(root, match) || (() => {});
    return;
  }
}

function signedIn(namespace) {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = `namespace ${namespace}`;
  $('who').dataset.namespace = namespace;
  if (feed.state === 'stopped') feed.start();
  route();
}

function signedOut(message = '') {
  feed.stop();
  dispose();
  dispose = () => {};
  session.clear();
  $('view').replaceChildren();
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('key').value = '';
  $('key').focus();
}

/** The namespace a key belongs to (the API lists exactly one for a namespace key). */
async function namespaceOf(key) {
  authorization(key); // a malformed key is refused before it goes anywhere
  const names = await api('/api/v1/namespaces', {key});
  return names[0];
}

async function signIn(event) {
  event.preventDefault();
  const key = $('key').value.trim();
  $('signin').disabled = true;
  try {
    const namespace = await namespaceOf(key);
    session.key = key;
    $('key').value = '';
    signedIn(namespace);
  } catch (error) {
    $('login-error').textContent = error instanceof ApiError && error.status === 401 ? 'The key was refused.' : error.message;
  } finally {
    $('signin').disabled = false;
  }
}

async function boot() {
  $('login').addEventListener('submit', signIn);
  $('logout').addEventListener('click', () => signedOut());
  window.addEventListener('hashchange', route);
  if (!session.key) {
    signedOut();
    return;
  }
  try {
    signedIn(await namespaceOf(session.key));
  } catch (error) {
    signedOut(error instanceof ApiError && error.status === 401 ? 'The key was refused; sign in again.' : error.message);
  }
}

boot();
