// The operator's views: feeds with their health and next fire, dead letters with redrive and delete, and
// the invokers with their pools. Each refreshes itself while it is shown.

import {api, ns} from './api.js';
import {h, relative, table, when} from './dom.js';

const REFRESH_MS = 5000;
// Unchanged data is redrawn only this often (for its relative times), so a row is not replaced under the
// pointer of someone about to click it.
const REDRAW_UNCHANGED_MS = 30000;

/** Shows `draw(await load())` now and every REFRESH_MS; the returned function stops it. */
function refreshing(root, title, load, draw, ...above) {
  let alive = true;
  let timer = null;
  let shown = null;
  let drawnAt = 0;
  const heading = h('h1', {}, title);
  const body = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  const error = h('p', {class: 'error', role: 'alert'});
  root.replaceChildren(heading, error, ...above, body);
  const tick = async () => {
    try {
      const data = await load();
      const text = JSON.stringify(data);
      if (!alive) return;
      error.textContent = '';
      if (text !== shown || Date.now() - drawnAt > REDRAW_UNCHANGED_MS) {
        body.replaceChildren(draw(data, tick));
        shown = text;
        drawnAt = Date.now();
      }
    } catch (e) {
      if (alive) error.textContent = e.message;
    }
    if (alive) {
      clearTimeout(timer);
      timer = setTimeout(tick, REFRESH_MS);
    }
  };
  tick();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}

export function feedsView(root) {
  return refreshing(root, 'Feeds', () => api(ns('feeds')), (feeds) => {
    const rows = feeds.map((f) => {
      const st = f.status || {};
      const health = st.active ? h('span', {class: 'pill ok'}, 'active') : h('span', {class: 'pill bad'}, st.reason ? `${st.reason.kind}: ${st.reason.message}` : 'inactive');
      return [f.trigger, f.feed, f.provider, health, st.nextFire ? `${when(st.nextFire)} (${relative(st.nextFire)})` : '—', st.lastFire ? relative(st.lastFire) : '—', String(st.fireCount || 0), st.lastError || ''];
    });
    return table(['Trigger', 'Feed', 'Provider', 'Health', 'Next fire', 'Last fire', 'Fires', 'Last error'], rows, 'No feeds in this namespace.');
  });
}

function letterRow(letter, {armed, notices, refresh}) {
  const redrive = h('button', {type: 'button', class: 'primary redrive'}, 'Redrive');
  const remove = h('button', {type: 'button', class: 'danger delete'}, armed.has(letter.id) ? 'Really delete?' : 'Delete');
  const busy = (on) => {
    redrive.disabled = on;
    remove.disabled = on;
  };
  const notice = (...parts) => notices.prepend(h('li', {'data-id': letter.id}, ...parts));
  redrive.addEventListener('click', async () => {
    busy(true);
    try {
      const {activationId} = await api(ns(`deadletters/${letter.id}/redrive`), {method: 'POST'});
      notice(`Dead letter ${letter.id} redriven as `, h('a', {href: `#/activation/${activationId}`, class: 'mono redriven'}, activationId));
      refresh();
    } catch (e) {
      notice(`Redriving ${letter.id} failed: ${e.message}`);
      busy(false);
    }
  });
  // Deleting loses the run for good: the first click asks (and the question outlives a redraw), the second does it.
  remove.addEventListener('click', async () => {
    if (!armed.has(letter.id)) {
      armed.add(letter.id);
      remove.textContent = 'Really delete?';
      return;
    }
    busy(true);
    try {
      await api(ns(`deadletters/${letter.id}`), {method: 'DELETE'});
      armed.delete(letter.id);
      notice(`Dead letter ${letter.id} deleted.`);
      refresh();
    } catch (e) {
      notice(`Deleting ${letter.id} failed: ${e.message}`);
      busy(false);
    }
  });
  const reason = letter.reason || {};
  const reasonText = [reason.status, reason.error].filter(Boolean).join(': ') || JSON.stringify(reason);
  const last = letter.activationIds[letter.activationIds.length - 1] || letter.id;
  return h(
    'tr',
    {'data-id': letter.id},
    h('td', {class: 'mono'}, h('a', {href: `#/activation/${last}`, title: 'its last attempt'}, letter.id.slice(0, 12))),
    h('td', {}, letter.action),
    h('td', {}, letter.rule || '—'),
    h('td', {}, String(letter.attempts)),
    h('td', {}, reasonText),
    h('td', {}, when(letter.lastFailed)),
    h('td', {}, redrive, ' ', remove),
  );
}

export function deadLettersView(root) {
  const armed = new Set();
  const notices = h('ul', {id: 'notices', class: 'notices'});
  return refreshing(
    root,
    'Dead letters',
    () => api(ns('deadletters', {limit: 200})),
    (letters, refresh) => table(['Letter', 'Action', 'Rule', 'Attempts', 'Reason', 'Last failed', ''], letters.map((l) => letterRow(l, {armed, notices, refresh})), 'No dead letters: every run succeeded or is still being retried.'),
    notices,
  );
}

function meter(used, total) {
  const bar = h('span');
  bar.style.width = `${total ? Math.round((100 * used) / total) : 0}%`;
  return h('span', {class: 'meter', title: `${used} of ${total} MB in use`}, bar);
}

export function invokersView(root) {
  return refreshing(root, 'Invokers', () => api('/invokers/pools'), (pools) => {
    const rows = pools.map((p) => [
      p.invoker,
      h('span', {class: `pill ${p.state === 'up' ? 'ok' : 'bad'}`}, p.state),
      [meter(p.capacityMB - p.freeMB, p.capacityMB), ` ${p.capacityMB - p.freeMB} / ${p.capacityMB} MB`],
      String(p.warm),
      String(p.inFlight),
      String(p.completed),
      String(p.systemErrors),
      (p.families || []).join(', '),
      relative(p.started),
      relative(p.lastSeen),
    ]);
    return table(['Invoker', 'State', 'Pool memory', 'Warm', 'In flight', 'Completed', 'System errors', 'Runtimes', 'Up since', 'Last heartbeat'], rows, 'No invoker has reported yet.');
  });
}
