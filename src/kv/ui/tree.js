// The keys as a tree (WAI-ARIA tree pattern, flat: every row a treeitem with its aria-level).
// Keyboard: Up/Down move, Right opens a folder or enters it, Left closes it or goes to its
// parent, Home/End, Enter or Space opens a key, toggles a folder or loads the next page.

import { h } from "./dom.js";

export class Tree {
  // actions: open(key), expand(prefix) (list a folder that is not known whole), more(prefix)
  constructor(element, keys, actions) {
    this.element = element;
    this.keys = keys;
    this.actions = actions;
    this.expanded = new Set();
    this.selected = null;
    this.active = null; // the id of the row that takes the focus (roving tabindex)
    this.scheduled = false;
    element.addEventListener("keydown", (event) => this.onKey(event));
    element.addEventListener("click", (event) => {
      const row = event.target.closest("[role=treeitem]");
      if (row) this.activate(row.dataset.id, true);
    });
  }

  // Renders once for a burst of changes (a watch may report many at a time).
  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      this.render();
    }, 0);
  }

  // The visible rows, in order.
  rows() {
    const rows = [];
    const walk = (folder, listingPrefix, level) => {
      const { folders, keys } = this.keys.children(folder);
      const size = folders.length + keys.length;
      let position = 0;
      for (const { path, count } of folders) {
        position += 1;
        const open = this.expanded.has(path);
        const known = this.keys.complete(path);
        const id = `f:${path}`;
        rows.push({ kind: "folder", id, path, count, known, open, level, position, size });
        if (open) walk(path, path, level + 1);
      }
      for (const key of keys) {
        position += 1;
        rows.push({ kind: "key", id: `k:${key}`, key, level, position, size });
      }
      const listing = this.keys.listings.get(listingPrefix);
      const more = typeof listing?.next === "string" && !this.keys.complete(listingPrefix);
      if (listing && (more || listing.error)) {
        rows.push({ kind: "more", id: `m:${listingPrefix}`, path: listingPrefix, listing, level });
      } else if (listing?.loading && listing.pages === 0) {
        rows.push({ kind: "loading", id: `l:${listingPrefix}`, level });
      }
    };
    walk(this.keys.root, this.keys.filter, 1);
    return rows;
  }

  render() {
    const rows = this.rows();
    const hadFocus = this.element.contains(document.activeElement);
    if (!rows.some((row) => row.id === this.active && row.kind !== "loading")) {
      this.active = rows.find((row) => row.kind !== "loading")?.id ?? null;
    }
    this.element.replaceChildren(...rows.map((row) => this.row(row)));
    if (hadFocus) this.focused()?.focus();
  }

  row(row) {
    const common = {
      role: "treeitem",
      "aria-level": row.level,
      dataset: { id: row.id, kind: row.kind },
      tabindex: row.id === this.active ? "0" : "-1",
      class: `row ${row.kind}`,
    };
    const element = {
      folder: () => this.folderRow(row, common),
      key: () => this.keyRow(row, common),
      more: () => this.moreRow(row, common),
      loading: () => h("li", { role: "none", class: "row loading", text: "Loading…" }),
    }[row.kind]();
    element.style.setProperty("--level", String(row.level - 1)); // the indent (style.css)
    return element;
  }

  folderRow(row, common) {
    const name = row.path.slice(parentOf(row.path).length);
    const count = `${row.count}${row.known ? "" : "+"}`;
    return h(
      "li",
      {
        ...common,
        "aria-expanded": String(row.open),
        "aria-setsize": row.size,
        "aria-posinset": row.position,
        "aria-label": `${name}, folder, ${count} keys`,
      },
      h("span", { class: "twisty", "aria-hidden": "true", text: row.open ? "▾" : "▸" }),
      h("span", { class: "name", text: name }),
      h("span", { class: "count", text: count, title: row.known ? "keys" : "keys so far" }),
    );
  }

  keyRow(row, common) {
    const record = this.keys.records.get(row.key);
    const expiring = record?.expires_at
      ? h("span", { class: "expiring", title: `expires ${record.expires_at}`, text: "ttl" })
      : null;
    return h(
      "li",
      {
        ...common,
        "aria-selected": String(row.key === this.selected),
        "aria-setsize": row.size,
        "aria-posinset": row.position,
      },
      h("span", { class: "name", text: row.key.slice(parentOf(row.key).length) }),
      expiring,
      h("span", { class: "revision", text: `r${record?.revision ?? "?"}` }),
    );
  }

  moreRow(row, common) {
    const { listing } = row;
    let text = `Load more (page ${listing.pages + 1})`;
    if (listing.loading) text = "Loading…";
    else if (listing.error) text = `Could not list (${listing.error.message}): try again`;
    return h("li", common, h("span", { class: "name", text }));
  }

  focused() {
    if (this.active === null) return null;
    return this.element.querySelector(`[data-id="${CSS.escape(this.active)}"]`);
  }

  select(key) {
    this.selected = key;
    if (key !== null) {
      // Open the folders around it, so that it is in view.
      for (let i = key.indexOf("/"); i >= 0; i = key.indexOf("/", i + 1)) {
        const folder = key.slice(0, i + 1);
        if (folder.length <= this.keys.root.length || this.expanded.has(folder)) continue;
        this.expanded.add(folder);
        if (!this.keys.complete(folder)) this.actions.expand(folder);
      }
      this.active = `k:${key}`;
    }
    this.schedule();
  }

  // What Enter (or a click) does to the row `id`.
  activate(id, click = false) {
    const row = this.rows().find((candidate) => candidate.id === id);
    if (!row) return;
    this.active = id;
    if (row.kind === "key") this.actions.open(row.key);
    else if (row.kind === "folder") this.toggle(row);
    else if (row.kind === "more") this.actions.more(row.path);
    this.render();
    if (click) this.focused()?.focus();
  }

  toggle(row, open = !row.open) {
    if (open) {
      this.expanded.add(row.path);
      if (!row.known) this.actions.expand(row.path);
    } else {
      this.expanded.delete(row.path);
    }
  }

  onKey(event) {
    const rows = this.rows().filter((row) => row.kind !== "loading");
    const index = rows.findIndex((row) => row.id === this.active);
    if (index < 0) return;
    const row = rows[index];
    const moveTo = (target) => {
      if (!target) return;
      this.active = target.id;
      this.render();
      this.focused()?.focus();
    };
    switch (event.key) {
      case "ArrowDown":
        moveTo(rows[index + 1]);
        break;
      case "ArrowUp":
        moveTo(rows[index - 1]);
        break;
      case "Home":
        moveTo(rows[0]);
        break;
      case "End":
        moveTo(rows.at(-1));
        break;
      case "ArrowRight":
        if (row.kind !== "folder") return;
        if (!row.open) {
          this.toggle(row, true);
          this.render();
        } else if (rows[index + 1]?.level > row.level) moveTo(rows[index + 1]);
        break;
      case "ArrowLeft":
        if (row.kind === "folder" && row.open) {
          this.toggle(row, false);
          this.render();
        } else {
          moveTo(rows.slice(0, index).findLast((candidate) => candidate.level < row.level));
        }
        break;
      case "Enter":
      case " ":
        this.activate(row.id);
        this.focused()?.focus();
        break;
      default:
        return;
    }
    event.preventDefault();
  }
}

// The folder a key or a folder is in ("a/b/" for "a/b/c" and for "a/b/c/"; "" at the top).
function parentOf(path) {
  return path.slice(0, path.lastIndexOf("/", path.length - 2) + 1);
}
