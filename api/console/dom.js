// Building the page from data without ever parsing markup: every value becomes a text node or an attribute.
// Activation results and logs are written by tenants' code, so no string from the API may reach an HTML parser
// (the page's Content-Security-Policy, through Trusted Types, makes any string-to-markup assignment throw anyway).

const SVG_NS = 'http://www.w3.org/2000/svg';

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.setAttribute('class', value);
    } else if (name === 'href' && !String(value).startsWith('#')) {
      // Links only move inside the console: a tenant's `javascript:` text must never become a link.
      throw new Error('only in-page links are allowed');
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

function appendAll(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h('td', {class: 'num'}, 42)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  appendAll(el, children);
  return el;
}

/** An SVG element, same form as `h`. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  appendAll(el, children);
  return el;
}

/** Two digits, for clock times. */
function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** `HH:MM:SS.mmm` of an epoch-ms instant, local time. */
export function clock(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** A date and time, local, to the second. */
export function when(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(ms).slice(0, 8)}`;
}

/** A duration in ms as people read it. */
export function millis(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  if (ms < 172800000) return `${(ms / 3600000).toFixed(1)} h`;
  return `${(ms / 86400000).toFixed(1)} d`;
}

/** How far away an instant is: "in 12 s", "3 min ago". */
export function relative(ms, now = Date.now()) {
  if (!ms) return '—';
  const delta = ms - now;
  const text = millis(Math.abs(delta));
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

export function percent(fraction) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return '—';
  return `${(fraction * 100).toFixed(fraction === 1 || fraction === 0 ? 0 : 1)} %`;
}

/** A status word with its colour class. */
export function statusBadge(status) {
  const cls = status === 'success' ? 'ok' : status === 'application error' ? 'warn' : 'bad';
  return h('span', {class: `status ${cls}`}, status);
}

/** A table with a header row; `rows` are arrays of cells or ready <tr> elements. */
export function table(headers, rows, empty = 'Nothing here yet.') {
  const head = h('thead', {}, h('tr', {}, headers.map((title) => h('th', {}, title))));
  const body = h('tbody', {}, rows.map((row) => (row instanceof Node ? row : h('tr', {}, row.map((c) => h('td', {}, c))))));
  const el = h('table', {}, head, body);
  return rows.length ? el : h('div', {}, el, h('p', {class: 'empty'}, empty));
}
