// The live activation feed: `…/activations/stream` read with fetch() streaming, because EventSource cannot
// send an Authorization header and the key must never travel in a URL. Reconnects resume with Last-Event-ID,
// as EventSource would, so a dropped connection loses and repeats nothing.

import {authorization, ns, session} from './api.js';

const MAX_RECORDS = 1000;
const BACKFILL_MS = 15 * 60 * 1000;
const RETRY_MS = [500, 1000, 2000, 5000];

/** Split SSE text into complete events and the unfinished rest: `{events: [{id, event, data}], rest}`. */
export function parseEvents(text) {
  const events = [];
  const blocks = text.replace(/\r\n?/g, '\n').split('\n\n');
  const rest = blocks.pop();
  for (const block of blocks) {
    const found = {id: null, event: 'message', data: []};
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') found.id = value;
      else if (field === 'event') found.event = value;
      else if (field === 'data') found.data.push(value);
    }
    if (found.data.length) events.push({id: found.id, event: found.event, data: found.data.join('\n')});
  }
  return {events, rest};
}

/**
 * One live feed of the namespace's activation records, newest first, capped at MAX_RECORDS.
 * `filters` are the stream's own (`name`, `status`, `kind`); listeners get `(records, added)` on each change
 * and the connection state (`connecting`, `live`, `reconnecting`, `stopped`) through `onState`.
 */
export class LiveFeed {
  constructor() {
    this.records = [];
    this.ids = new Set();
    this.filters = {};
    this.state = 'stopped';
    this.error = '';
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.controller = null;
    this.lastEventId = null;
    this.generation = 0;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.state, this.error);
    return () => this.stateListeners.delete(listener);
  }

  setState(state, error = '') {
    this.state = state;
    this.error = error;
    for (const listener of this.stateListeners) listener(state, error);
  }

  /** (Re)start with these filters: the records shown so far go, the last quarter hour is read again. */
  start(filters = this.filters) {
    this.stop();
    this.filters = {...filters};
    this.records = [];
    this.ids.clear();
    this.lastEventId = null;
    for (const listener of this.listeners) listener(this.records, []);
    const generation = ++this.generation;
    this.run(generation);
  }

  stop() {
    this.generation++;
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.setState('stopped');
  }

  async run(generation) {
    let failures = 0;
    while (generation === this.generation) {
      this.setState(failures ? 'reconnecting' : 'connecting', this.error);
      this.controller = new AbortController();
      try {
        await this.read(generation, this.controller.signal);
        failures = 0; // the server ended the stream (drain, slow reader): resume at once
      } catch (error) {
        if (generation !== this.generation) return;
        failures++;
        this.setState('reconnecting', error.message || String(error));
        if (error.fatal) {
          this.setState('stopped', error.message);
          return;
        }
      }
      if (generation !== this.generation) return;
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]));
    }
  }

  async read(generation, signal) {
    const query = {...this.filters};
    const headers = {Authorization: authorization(session.key), Accept: 'text/event-stream'};
    if (this.lastEventId !== null) headers['Last-Event-ID'] = this.lastEventId;
    else query.since = String(Date.now() - BACKFILL_MS);
    const response = await fetch(ns('activations/stream', query), {headers, signal, cache: 'no-store', credentials: 'omit'});
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // not JSON: keep the status line
      }
      const error = new Error(message);
      // A refused key or a bad filter will not get better by retrying; a 429 or a 503 may.
      error.fatal = response.status === 400 || response.status === 401 || response.status === 403;
      throw error;
    }
    this.setState('live');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done || generation !== this.generation) return;
      buffer += value;
      const {events, rest} = parseEvents(buffer);
      buffer = rest;
      const added = [];
      for (const event of events) {
        if (event.id !== null) this.lastEventId = event.id;
        if (event.event !== 'activation') continue;
        const record = JSON.parse(event.data);
        if (this.ids.has(record.activationId)) continue;
        this.ids.add(record.activationId);
        added.push(record);
      }
      if (added.length) this.add(added);
    }
  }

  add(added) {
    this.records = [...added.reverse(), ...this.records];
    if (this.records.length > MAX_RECORDS) {
      for (const gone of this.records.splice(MAX_RECORDS)) this.ids.delete(gone.activationId);
    }
    for (const listener of this.listeners) listener(this.records, added);
  }
}
