// Two pictures drawn as plain SVG: throughput with its error rate over time, and a latency histogram.

import {clock, h, millis, percent, s} from './dom.js';

const W = 560;
const H = 180;
const PAD = {left: 34, right: 34, top: 12, bottom: 22};

/** Stacked bars of successes and failures per bucket, with the error rate as a line on the right axis. */
export function throughputChart(buckets, title) {
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const max = Math.max(1, ...buckets.map((b) => b.ok + b.failed));
  const step = innerW / Math.max(1, buckets.length);
  const y = (v) => PAD.top + innerH - (v / max) * innerH;
  const bars = [];
  const points = [];
  buckets.forEach((b, i) => {
    const x = PAD.left + i * step;
    const total = b.ok + b.failed;
    const tip = `${clock(b.start).slice(0, 8)}: ${b.ok} ok, ${b.failed} failed`;
    if (b.ok) bars.push(s('rect', {class: 'ok', x: x + 1, y: y(total), width: Math.max(1, step - 2), height: y(b.failed) - y(total)}, s('title', {}, tip)));
    if (b.failed) bars.push(s('rect', {class: 'bad', x: x + 1, y: y(b.failed), width: Math.max(1, step - 2), height: y(0) - y(b.failed)}, s('title', {}, tip)));
    if (total) points.push(`${(x + step / 2).toFixed(1)},${(PAD.top + innerH - (b.failed / total) * innerH).toFixed(1)}`);
  });
  const total = buckets.reduce((n, b) => n + b.ok + b.failed, 0);
  const failed = buckets.reduce((n, b) => n + b.failed, 0);
  const svg = s(
    'svg',
    {class: 'chart throughput', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${total} runs, ${failed} failed`},
    s('line', {class: 'axis', x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0)}),
    s('text', {x: PAD.left - 4, y: y(max) + 4, 'text-anchor': 'end'}, max),
    s('text', {x: PAD.left - 4, y: y(0), 'text-anchor': 'end'}, 0),
    s('text', {x: W - PAD.right + 4, y: PAD.top + 4}, '100%'),
    s('text', {x: W - PAD.right + 4, y: y(0)}, '0%'),
    buckets.length ? s('text', {x: PAD.left, y: H - 6}, clock(buckets[0].start).slice(0, 5)) : null,
    s('text', {x: W - PAD.right, y: H - 6, 'text-anchor': 'end'}, 'now'),
    bars,
    points.length > 1 ? s('polyline', {class: 'rate', points: points.join(' ')}) : null,
  );
  return h(
    'div',
    {class: 'card'},
    h('h2', {}, title),
    svg,
    h(
      'div',
      {class: 'legend'},
      h('span', {}, h('span', {class: 'swatch ok'}), 'success'),
      h('span', {}, h('span', {class: 'swatch bad'}), 'failed'),
      h('span', {}, h('span', {class: 'swatch rate'}), 'error rate'),
      h('span', {}, `${total} runs, ${percent(total ? failed / total : null)} failed`),
    ),
  );
}

/** Bars of how many runs fell into each latency bin. */
export function histogramChart(bins, title, summary = '') {
  const innerW = W - PAD.left - 10;
  const innerH = H - PAD.top - PAD.bottom;
  const max = Math.max(1, ...bins.map((b) => b.count));
  const step = innerW / Math.max(1, bins.length);
  const bars = bins.map((b, i) => {
    const x = PAD.left + i * step;
    const height = (b.count / max) * innerH;
    return s(
      'g',
      {class: 'bin'},
      s('rect', {class: 'bar', x: x + 2, y: PAD.top + innerH - height, width: Math.max(1, step - 4), height, 'data-count': b.count}, s('title', {}, `${b.label}: ${b.count}`)),
      s('text', {x: x + step / 2, y: H - 6, 'text-anchor': 'middle'}, b.label),
    );
  });
  const svg = s(
    'svg',
    {class: 'chart histogram', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title},
    s('line', {class: 'axis', x1: PAD.left, y1: PAD.top + innerH, x2: W - 10, y2: PAD.top + innerH}),
    s('text', {x: PAD.left - 4, y: PAD.top + 4, 'text-anchor': 'end'}, max),
    bars,
  );
  return h('div', {class: 'card'}, h('h2', {}, title), bins.length ? svg : h('p', {class: 'empty'}, 'No runs yet.'), summary ? h('div', {class: 'legend'}, summary) : null);
}

export function latencySummary(durations, quantile) {
  return `${durations.length} runs · p50 ${millis(quantile(durations, 0.5))} · p95 ${millis(quantile(durations, 0.95))} · max ${millis(durations.length ? Math.max(...durations) : null)}`;
}
