// The operator's views: feeds with their health and next fire, dead letters with redrive and delete, and
// the invokers with their pools. Each refreshes itself while it is shown.

import {api, ns} from './api.js';
import {h, relative, table, when} from './dom.js';

const REFRESH_MS = 5000;

/** Shows `render()`'s answer now and every REFRESH_MS; the returned function stops it. */
function refreshing(root, title, render) {
  let alive = true;
  let timer = null;
  const heading = h('h1', {}, title);
  const body = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  const error = h('p', {class: 'error', role: 'alert'});
  root.replaceChildren(heading, error, body);
  const tick = async () => {
    try {
      const content = await render(tick);
      if (!alive) return;
      error.textContent = '';
      body.replaceChildren(content);
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
  return refreshing(root, 'Feeds', async () => {
    const feeds = await api(ns('feeds'));
    const rows = feeds.map((f) => {
      const st = f.status || {};
      const health = st.active ? h('span', {class: 'pill ok'}, 'active') : h('span', {class: 'pill bad'}, st.reason ? `${st.reason.kind}: ${st.reason.message}` : 'inactive');
      return [f.trigger, f.feed, f.provider, health, st.nextFire ? `${when(st.nextFire)} (${relative(st.nextFire)})` : '—', st.lastFire ? relative(st.lastFire) : '—', String(st.fireCount || 0), st.lastError || ''];
    });
    return table(['Trigger', 'Feed', 'Provider', 'Health', 'Next fire', 'Last fire', 'Fires', 'Last error'], rows, 'No feeds in this namespace.');
  });
}

function letterRow(letter, refresh) {
  const out = h('td', {class: 'muted'});
  const redrive = h('button', {type: 'button', class: 'primary redrive'}, 'Redrive');
  const remove = h('button', {type: 'button', class: 'danger delete'}, 'Delete');
  const busy = (on) => {
    redrive.disabled = on;
    remove.disabled = on;
  };
  redrive.addEventListener('click', async () => {
    busy(true);
    try {
      const {activationId} = await api(ns(`deadletters/${letter.id}/redrive`), {method: 'POST'});
      out.replaceChildren('redriven as ', h('a', {href: `#/activation/${activationId}`, class: 'mono redriven'}, activationId));
      setTimeout(refresh, 1500);
    } catch (e) {
      out.textContent = e.message;
      busy(false);
    }
  });
  // Deleting loses the run for good: the first click asks, the second does it.
  remove.addEventListener('click', async () => {
    if (!remove.dataset.armed) {
      remove.dataset.armed = 'yes';
      remove.textContent = 'Really delete?';
      return;
    }
    busy(true);
    try {
      await api(ns(`deadletters/${letter.id}`), {method: 'DELETE'});
      out.textContent = 'deleted';
      setTimeout(refresh, 500);
    } catch (e) {
      out.textContent = e.message;
      busy(false);
    }
  });
  const reason = letter.reason || {};
  const reasonText = [reason.status, reason.error || reason.message].filter(Boolean).join(': ') || JSON.stringify(reason);
  return h(
    'tr',
    {'data-id': letter.id},
    h('td', {class: 'mono'}, h('a', {href: `#/activation/${letter.activationIds[letter.activationIds.length - 1] || letter.id}`}, letter.id.slice(0, 12))),
    h('td', {}, letter.action),
    h('td', {}, letter.rule || '—'),
    h('td', {}, String(letter.attempts)),
    h('td', {}, reasonText),
    h('td', {}, relative(letter.lastFailed)),
    h('td', {}, redrive, ' ', remove),
    out,
  );
}

export function deadLettersView(root) {
  return refreshing(root, 'Dead letters', async (refresh) => {
    const letters = await api(ns('deadletters', {limit: 200}));
    return table(['Letter', 'Action', 'Rule', 'Attempts', 'Reason', 'Last failed', '', ''], letters.map((l) => letterRow(l, refresh)), 'No dead letters: every run succeeded or is still being retried.');
  });
}

function meter(used, total) {
  const bar = h('span');
  bar.style.width = `${total ? Math.round((100 * used) / total) : 0}%`;
  return h('span', {class: 'meter', title: `${used} of ${total} MB in use`}, bar);
}

export function invokersView(root) {
  return refreshing(root, 'Invokers', async () => {
    const pools = await api('/invokers/pools');
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
