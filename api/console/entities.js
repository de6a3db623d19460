// Actions, triggers, rules and packages with their recent success rate and latency; one action's pictures.

import {api, ns} from './api.js';
import {histogramChart, latencySummary, throughputChart} from './charts.js';
import {h, millis, percent, relative, table} from './dom.js';
import {byEntity, firesByTrigger, latencyHistogram, quantile, succeeded, throughput} from './stats.js';

const RECENT = 200; // the API's largest page: "recent" means the namespace's last 200 runs
const RULES_READ = 50;
const NAME = /^[A-Za-z0-9_@.-][A-Za-z0-9_@. -]*(\/[A-Za-z0-9_@.-][A-Za-z0-9_@. -]*)?$/;

function rate(stats) {
  if (!stats) return h('span', {class: 'muted'}, 'no recent runs');
  const cls = stats.rate >= 0.99 ? 'ok' : 'bad';
  return h('span', {class: `pill ${cls}`}, `${percent(stats.rate)} of ${stats.count}`);
}

function actionLink(name) {
  return h('a', {href: `#/action/${encodeURIComponent(name)}`}, name);
}

/** A rule's `{path, name}` reference as the activations name it: `name`, or `pkg/name` inside a package. */
function qualifiedRef(ref) {
  const parts = String(ref.path || '').split('/');
  return parts.length > 1 ? `${parts.slice(1).join('/')}/${ref.name}` : String(ref.name || '');
}

function kindOfAction(action) {
  const kind = (action.annotations || []).find((a) => a.key === 'exec');
  return kind ? kind.value : '';
}

export function entitiesView(root) {
  let alive = true;
  root.replaceChildren(h('h1', {}, 'Actions & triggers'), h('p', {class: 'muted'}, 'Loading…'));
  (async () => {
    let loaded;
    try {
      loaded = await Promise.all([
        api(ns('actions', {limit: 200})),
        api(ns('triggers', {limit: 200})),
        api(ns('rules', {limit: 200})),
        api(ns('packages', {limit: 200})),
        api(ns('activations', {limit: RECENT})),
      ]);
    } catch (error) {
      if (alive) root.replaceChildren(h('h1', {}, 'Actions & triggers'), h('p', {class: 'error'}, error.message));
      return;
    }
    if (!alive) return;
    const [actions, triggers, listedRules, packages, recent] = loaded;
    // A listing carries no rule status (as in OpenWhisk): each rule is read, for the first RULES_READ of them.
    const rules = await Promise.all(
      listedRules.map((r, i) => (i < RULES_READ ? api(ns(`rules/${encodeURIComponent(r.name)}`)).catch(() => r) : r)),
    );
    if (!alive) return;
    const stats = byEntity(recent);
    const fires = firesByTrigger(recent);
    const qualified = (a) => {
      const parts = String(a.namespace).split('/');
      return parts.length > 1 ? `${parts.slice(1).join('/')}/${a.name}` : a.name;
    };
    const actionRows = actions.map((a) => {
      const name = qualified(a);
      const s = stats.get(name);
      return [actionLink(name), kindOfAction(a), a.version, rate(s), s ? millis(s.p50) : '—', s ? millis(s.p95) : '—', s ? relative(s.last) : '—'];
    });
    const triggerRows = triggers.map((t) => {
      const f = fires.get(t.name);
      return [t.name, f ? String(f.count) : '0', f ? relative(f.last) : '—'];
    });
    const ruleRows = rules.map((r) => {
      const action = r.action ? qualifiedRef(r.action) : '';
      const trigger = r.trigger ? qualifiedRef(r.trigger) : '';
      const s = stats.get(action);
      return [r.name, trigger, action ? actionLink(action) : '', h('span', {class: `pill ${r.status === 'active' ? 'ok' : ''}`}, r.status || ''), rate(s), s ? millis(s.p50) : '—'];
    });
    const packageRows = packages.map((p) => {
      const inside = [...stats].filter(([key]) => key.startsWith(`${p.name}/`)).map(([, s]) => s);
      const count = inside.reduce((n, s) => n + s.count, 0);
      const ok = inside.reduce((n, s) => n + s.ok, 0);
      const binding = p.binding && p.binding.name ? `→ /${p.binding.namespace}/${p.binding.name}` : '';
      return [p.name, binding, p.publish ? 'yes' : 'no', count ? rate({rate: ok / count, count}) : rate(null)];
    });
    root.replaceChildren(
      h('h1', {}, 'Actions & triggers'),
      h('p', {class: 'muted'}, `Success rates and latencies over the namespace's last ${recent.length} activations.`),
      h('h2', {}, `Actions (${actions.length})`),
      h('div', {id: 'actions'}, table(['Action', 'Kind', 'Version', 'Success', 'p50', 'p95', 'Last run'], actionRows)),
      h('h2', {}, `Triggers (${triggers.length})`),
      h('div', {id: 'triggers'}, table(['Trigger', 'Recent fires', 'Last fire'], triggerRows)),
      h('h2', {}, `Rules (${rules.length})`),
      h('div', {id: 'rules'}, table(['Rule', 'Trigger', 'Action', 'Status', "Action's success", 'p50'], ruleRows)),
      h('h2', {}, `Packages (${packages.length})`),
      h('div', {id: 'packages'}, table(['Package', 'Binding', 'Published', 'Success of its actions'], packageRows)),
    );
  })();
  return () => {
    alive = false;
  };
}

export function actionView(root, {name}) {
  let alive = true;
  const title = h('h1', {}, 'Action ', name);
  root.replaceChildren(h('p', {}, h('a', {href: '#/entities'}, '← Actions & triggers')), title, h('p', {class: 'muted'}, 'Loading…'));
  if (!NAME.test(name)) {
    root.append(h('p', {class: 'error'}, 'Not an action name.'));
    return () => {};
  }
  (async () => {
    let records;
    try {
      records = await api(ns('activations', {name, limit: RECENT}));
    } catch (error) {
      if (alive) root.append(h('p', {class: 'error'}, error.message));
      return;
    }
    if (!alive) return;
    const durations = records.filter((r) => typeof r.duration === 'number').map((r) => r.duration);
    const ok = records.filter(succeeded).length;
    const newest = records.length ? Math.max(...records.map((r) => r.start)) : Date.now();
    const oldest = records.length ? Math.min(...records.map((r) => r.start)) : newest - 60000;
    const span = Math.max(60000, Date.now() - oldest);
    root.replaceChildren(
      h('p', {}, h('a', {href: '#/entities'}, '← Actions & triggers')),
      title,
      h('p', {class: 'muted'}, `Its last ${records.length} activations: ${percent(records.length ? ok / records.length : null)} succeeded.`),
      h(
        'div',
        {class: 'charts'},
        h('div', {id: 'latency'}, histogramChart(latencyHistogram(durations), 'Latency histogram', latencySummary(durations, quantile))),
        h('div', {id: 'action-throughput'}, throughputChart(throughput(records, Date.now(), span, 30), `Throughput and error rate since ${relative(oldest)}`)),
      ),
    );
  })();
  return () => {
    alive = false;
  };
}
