// What the page knows of the keys under the prefix it shows (the filter): the records listed
// so far, how far each listing has gone, and the changes the watch reported. A folder is the
// keys sharing a prefix that ends in "/"; it is listed on its own, a page at a time.

import * as api from "./api.js";

// kv orders keys by their UTF-8 bytes, which is the order of their code points. JavaScript's
// `<` compares UTF-16 units instead, and puts U+E000..U+FFFF after the astral planes.
export function compareKeys(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a.charCodeAt(i) === b.charCodeAt(i)) i += 1;
  if (i === a.length || i === b.length) return a.length - b.length;
  return a.codePointAt(i) - b.codePointAt(i);
}

// One prefix's listing: `next` is undefined before the first page, a cursor while more pages
// remain, null once the last page is in.
class Listing {
  constructor(prefix) {
    this.prefix = prefix;
    this.next = undefined;
    this.last = null; // the last key listed
    this.pages = 0;
    this.loading = false;
    this.error = null;
  }

  get complete() {
    return this.next === null;
  }
}

export class Keys {
  constructor() {
    this.generation = 0;
    this.reset("");
  }

  // Forgets everything: a new filter, or a watch (re)started, after which the page lists again.
  reset(filter) {
    this.filter = filter;
    this.root = filter.slice(0, filter.lastIndexOf("/") + 1); // the folder the filter is in
    this.records = new Map(); // key -> {revision, expires_at}
    this.listings = new Map(); // prefix -> Listing
    this.generation += 1; // answers to requests made before are dropped
    // The changes received while pages are being fetched, replayed over each page when it
    // arrives: the page may have been read before some of them were made.
    this.changes = [];
    this.fetching = 0;
  }

  listing(prefix) {
    let listing = this.listings.get(prefix);
    if (listing === undefined) {
      listing = new Listing(prefix);
      this.listings.set(prefix, listing);
    }
    return listing;
  }

  // Fetches the next page of `prefix`; throws what the API threw (the listing keeps it too).
  async loadPage(prefix, limit) {
    const listing = this.listing(prefix);
    if (listing.loading || listing.complete) return;
    const generation = this.generation;
    const mark = this.changes.length;
    listing.loading = true;
    listing.error = null;
    this.fetching += 1;
    try {
      const page = await api.list(prefix, { limit, cursor: listing.next });
      if (generation !== this.generation) return;
      for (const item of page.items) this.records.set(item.key, summary(item));
      listing.next = page.next;
      listing.last = page.items.at(-1)?.key ?? listing.last;
      listing.pages += 1;
      for (const change of this.changes.slice(mark)) {
        if (change.data.key.startsWith(prefix)) this.applyChange(change.type, change.data);
      }
    } catch (error) {
      if (generation === this.generation) listing.error = error;
      throw error;
    } finally {
      if (generation === this.generation) {
        listing.loading = false;
        this.fetching -= 1;
        if (this.fetching === 0) this.changes = [];
      }
    }
  }

  // A `put` or `delete` event of the watch.
  change(type, data) {
    if (this.fetching > 0) this.changes.push({ type, data });
    this.applyChange(type, data);
  }

  applyChange(type, data) {
    if (type === "put") this.records.set(data.key, summary(data));
    else this.records.delete(data.key);
  }

  // A record this page wrote itself (the watch reports it too, a moment later).
  put(record) {
    if (record.key.startsWith(this.filter)) this.records.set(record.key, summary(record));
  }

  remove(key) {
    this.records.delete(key);
  }

  // The folders and keys directly in `folder`: folders first, each in kv's order.
  children(folder) {
    const folders = new Map();
    const keys = [];
    for (const key of this.records.keys()) {
      if (!key.startsWith(folder)) continue;
      const slash = key.indexOf("/", folder.length);
      if (slash < 0) keys.push(key);
      else {
        const path = key.slice(0, slash + 1);
        folders.set(path, (folders.get(path) ?? 0) + 1);
      }
    }
    const sorted = (items) => items.sort(compareKeys);
    return {
      folders: sorted([...folders.keys()]).map((path) => ({ path, count: folders.get(path) })),
      keys: sorted(keys),
    };
  }

  count(prefix) {
    let count = 0;
    for (const key of this.records.keys()) if (key.startsWith(prefix)) count += 1;
    return count;
  }

  // Whether every key under `prefix` is known: a listing of it or of a folder around it has
  // reached its end, or has gone past the keys of `prefix` (they are contiguous in kv's order).
  complete(prefix) {
    for (const listing of this.listings.values()) {
      if (!prefix.startsWith(listing.prefix)) continue;
      if (listing.complete) return true;
      const last = listing.last;
      if (last !== null && !last.startsWith(prefix) && compareKeys(last, prefix) > 0) return true;
    }
    return false;
  }

  get loadedCount() {
    return this.records.size;
  }
}

function summary(record) {
  return { revision: record.revision, expires_at: record.expires_at ?? null };
}
