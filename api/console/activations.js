// The Activations view: the live feed with its filters, and the throughput / error-rate picture of it.

import {histogramChart, latencySummary, throughputChart} from './charts.js';
import {clock, h, millis, statusBadge, table} from './dom.js';
import {entityOf, kindOf, latencyHistogram, quantile, statusOf, throughput} from './stats.js';

const CHART_SPAN_MS = 15 * 60 * 1000;
const CHART_BUCKETS = 30;
const SHOWN = 200;
// A busy namespace sends many records a second: the view redraws at most this often, with all of them.
const REDRAW_MS = 250;

const STATUSES = [
  ['', 'any status'],
  ['success', 'success'],
  ['failed', 'failed (any)'],
  ['application error', 'application error'],
  ['action developer error', 'developer error'],
  ['whisk internal error', 'internal error'],
];

function filterForm(feed) {
  const name = h('input', {name: 'name', placeholder: 'action or trigger', value: feed.filters.name || ''});
  const status = h('select', {name: 'status'}, STATUSES.map(([value, label]) => h('option', {value, selected: (feed.filters.status || '') === value}, label)));
  const kind = h('select', {name: 'kind'}, [['', 'actions and triggers'], ['action', 'actions'], ['trigger', 'triggers']].map(([value, label]) => h('option', {value, selected: (feed.filters.kind || '') === value}, label)));
  const form = h(
    'form',
    {class: 'filters', id: 'filters'},
    h('label', {}, 'Name', name),
    h('label', {}, 'Status', status),
    h('label', {}, 'Kind', kind),
    h('button', {type: 'submit', class: 'primary'}, 'Apply'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    feed.start({name: name.value.trim(), status: status.value, kind: kind.value});
  });
  return form;
}

function row(record, fresh) {
  const id = record.activationId;
  const tr = h(
    'tr',
    {class: fresh ? 'clickable fresh' : 'clickable', 'data-id': id, 'data-kind': kindOf(record)},
    h('td', {class: 'mono'}, clock(record.start)),
    h('td', {}, kindOf(record)),
    h('td', {}, entityOf(record)),
    h('td', {}, statusBadge(statusOf(record))),
    h('td', {class: 'num'}, kindOf(record) === 'action' ? millis(record.duration) : ''),
    h('td', {class: 'mono'}, h('a', {href: `#/activation/${id}`}, id)),
  );
  tr.addEventListener('click', (event) => {
    if (event.target.tagName !== 'A') location.hash = `#/activation/${id}`;
  });
  return tr;
}

export function activationsView(root, {feed}) {
  const state = h('span', {class: 'live', id: 'live-state'}, '');
  const chartSlot = h('div', {id: 'throughput'});
  const latencySlot = h('div', {id: 'feed-latency'});
  const listSlot = h('div', {id: 'feed'});
  root.replaceChildren(
    h('h1', {}, 'Activations ', state),
    h('div', {class: 'charts'}, chartSlot, latencySlot),
    filterForm(feed),
    listSlot,
  );
  const draw = (records, fresh) => {
    const now = Date.now();
    chartSlot.replaceChildren(throughputChart(throughput(records, now, CHART_SPAN_MS, CHART_BUCKETS), 'Throughput and error rate, last 15 minutes'));
    const durations = records.filter((r) => kindOf(r) === 'action' && typeof r.duration === 'number').map((r) => r.duration);
    latencySlot.replaceChildren(histogramChart(latencyHistogram(durations), 'Latency of the runs shown', latencySummary(durations, quantile)));
    const rows = records.slice(0, SHOWN).map((r) => row(r, fresh.has(r.activationId)));
    listSlot.replaceChildren(table(['Started', 'Kind', 'Name', 'Status', 'Duration', 'Activation'], rows, 'Waiting for activations…'));
  };
  let pending = null;
  let fresh = new Set();
  const later = (records, added) => {
    for (const record of added) fresh.add(record.activationId);
    if (!added.length) fresh = new Set(); // the feed restarted
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      draw(feed.records, fresh);
      fresh = new Set();
    }, REDRAW_MS);
  };
  draw(feed.records, new Set());
  const unsubscribe = feed.subscribe(later);
  const unwatch = feed.onState((s, error) => {
    state.className = `live ${s === 'live' ? 'on' : s === 'stopped' ? 'off' : ''}`;
    state.textContent = s === 'live' ? 'live' : error ? `${s}: ${error}` : s;
    state.dataset.state = s;
  });
  // The chart's window moves even when nothing arrives.
  const ticking = setInterval(() => later(feed.records, []), 15000);
  return () => {
    unsubscribe();
    unwatch();
    clearInterval(ticking);
    clearTimeout(pending);
  };
}
