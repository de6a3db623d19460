// The REST API as the console calls it: the namespace key from this tab's session storage, sent as a Basic
// Authorization header on every request; never in a URL, never in local storage, never in a cookie.

const STORAGE_KEY = 'squall.key';

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE_KEY);
  },
  set key(value) {
    sessionStorage.setItem(STORAGE_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function authorization(key) {
  if (!/^[\x21-\x7e]+:[\x21-\x7e]+$/.test(key || '')) throw new ApiError(401, 'A key looks like uuid:secret.');
  return `Basic ${btoa(key)}`;
}

/** The caller's own namespace: every path below goes through `_`, which the API resolves to it. */
export function ns(path, query) {
  const qs = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== '')).toString() : '';
  return `/api/v1/namespaces/_/${path}${qs ? `?${qs}` : ''}`;
}

/** One API call; the parsed JSON answer, or an ApiError with OpenWhisk's `error` text. */
export async function api(path, {method = 'GET', body, key = session.key, signal} = {}) {
  const headers = {Authorization: authorization(key), Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
    signal,
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const message = data && typeof data === 'object' && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}
