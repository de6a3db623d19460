// One activation: its result, logs, timing and cause chain (what caused it, and what it caused).

import {api, ns} from './api.js';
import {clock, h, millis, statusBadge, when} from './dom.js';
import {annotation, entityOf, kindOf, statusOf} from './stats.js';

const ID = /^[0-9a-f]{32}$/;
const MAX_CHAIN = 8;

function link(id, label = id) {
  return h('a', {href: `#/activation/${id}`, class: 'mono'}, label);
}

/** Ids of the runs a record caused: a trigger's log lines name each rule's run, a sequence's its components. */
export function causedIds(record) {
  const ids = [];
  for (const line of record.logs || []) {
    const text = String(line).trim();
    if (ID.test(text)) {
      ids.push(text);
      continue;
    }
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed.activationId === 'string' && ID.test(parsed.activationId)) ids.push(parsed.activationId);
    } catch {
      // an ordinary log line
    }
  }
  return ids;
}

async function causes(record) {
  const chain = [];
  let cause = record.cause;
  while (cause && ID.test(cause) && chain.length < MAX_CHAIN) {
    try {
      const parent = await api(ns(`activations/${cause}`));
      chain.unshift(parent);
      cause = parent.cause;
    } catch {
      chain.unshift({activationId: cause, missing: true});
      break;
    }
  }
  return chain;
}

function timing(record) {
  if (kindOf(record) === 'trigger') return [['Fired', `${when(record.start)} (${clock(record.start)})`]];
  const init = annotation(record, 'initTime');
  return [
    ['Started', `${when(record.start)} (${clock(record.start)})`],
    ['Ended', record.end ? `${when(record.end)} (${clock(record.end)})` : '—'],
    ['Duration', millis(record.duration)],
    ['Wait time', millis(annotation(record, 'waitTime'))],
    ['Init time', init !== undefined ? millis(init) : 'none (a warm container)'],
  ];
}

function facts(pairs) {
  return h('dl', {class: 'facts'}, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function detailView(root, {id}) {
  let alive = true;
  root.replaceChildren(h('h1', {}, 'Activation ', h('span', {class: 'mono'}, id)), h('p', {class: 'muted'}, 'Loading…'));
  (async () => {
    let record;
    try {
      record = await api(ns(`activations/${id}`));
    } catch (error) {
      if (alive) root.replaceChildren(h('h1', {}, 'Activation ', h('span', {class: 'mono'}, id)), h('p', {class: 'error'}, error.message));
      return;
    }
    const chain = await causes(record);
    if (!alive) return;
    const children = causedIds(record);
    const kind = kindOf(record);
    const result = record.response ? record.response.result : undefined;
    root.replaceChildren(
      h('p', {}, h('a', {href: '#/activations'}, '← Activations')),
      h('h1', {}, `${kind === 'action' ? 'Action' : 'Trigger'} ${entityOf(record)} `, statusBadge(statusOf(record))),
      h(
        'div',
        {class: 'card', id: 'detail'},
        facts([
          ['Activation', h('span', {class: 'mono', id: 'detail-id'}, record.activationId)],
          ['Namespace', record.namespace],
          ['Subject', record.subject],
          ['Version', record.version],
          ['Kind', annotation(record, 'kind') || 'trigger'],
          ...timing(record),
        ]),
      ),
      h('h2', {}, 'Cause chain'),
      h(
        'div',
        {class: 'card chain', id: 'chain'},
        chain.length
          ? chain.map((parent) => [parent.missing ? h('span', {class: 'mono muted'}, `${parent.activationId} (not found)`) : link(parent.activationId, `${kindOf(parent)} ${entityOf(parent)}`), h('span', {class: 'sep'}, '→')])
          : h('span', {class: 'muted'}, 'nothing caused it but a direct call · '),
        h('strong', {}, `${kind} ${entityOf(record)}`),
        children.length ? [h('span', {class: 'sep'}, '→'), children.map((child) => link(child, child.slice(0, 12)))] : null,
      ),
      h('h2', {}, 'Result'),
      h('pre', {class: 'block', id: 'result'}, result === undefined ? '(none)' : JSON.stringify(result, null, 2)),
      h('h2', {}, `Logs (${(record.logs || []).length})`),
      h('pre', {class: 'block', id: 'logs'}, (record.logs || []).join('\n') || '(none)'),
      h('h2', {}, 'Annotations'),
      h('pre', {class: 'block', id: 'annotations'}, JSON.stringify(record.annotations || [], null, 2)),
    );
  })();
  return () => {
    alive = false;
  };
}
