// The pane beside the tree: one record (value, revision, expiry), its editor, the form that
// creates a key, and what is shown when someone else changed the record meanwhile.
//
// Every write names the revision the person saw (If-Match). When the server answers 412 the
// pane shows the value stored now beside the edit, and writes over it only when asked to.
//
// States (this.state.kind): none, loading, error, view, edit, conflict, gone, create.

import * as api from "./api.js";
import { h, secondsLeft } from "./dom.js";
import {
  button,
  facts,
  heading,
  jsonProblem,
  keyProblem,
  ttlField,
  ttlValue,
  valueEditor,
} from "./forms.js";

export class RecordPanel {
  // events: opened(key|null), saved(record), deleted(key), unauthorized(), confirm(text)
  constructor(element, events) {
    this.element = element;
    this.events = events;
    this.state = { kind: "none" };
    this.request = 0; // answers to an earlier open() are dropped
  }

  get key() {
    return this.state.key ?? null;
  }

  set(state) {
    this.state = state;
    this.render();
  }

  clear() {
    this.request += 1;
    this.set({ kind: "none" });
  }

  async open(key) {
    const request = ++this.request;
    this.set({ kind: "loading", key });
    this.events.opened(key);
    try {
      const record = await api.get(key);
      if (request === this.request) this.set({ kind: "view", key, record });
    } catch (error) {
      if (request !== this.request || this.unauthorized(error)) return;
      if (error.status === 404) this.set({ kind: "gone", key, reason: "missing" });
      else this.set({ kind: "error", key, message: error.message });
    }
  }

  // Reads the open record again (the watch was lost and is back).
  async refresh() {
    const { kind, key } = this.state;
    if (key === undefined || kind === "create" || kind === "loading") return;
    try {
      this.changed("put", await api.get(key));
    } catch (error) {
      if (this.unauthorized(error)) return;
      if (error.status === 404) this.changed("delete", { key, reason: "deleted" });
    }
  }

  // A change to a key, from the watch (or from refresh): applied to the open record, except
  // in the editor, which keeps what the person typed and says that saving will be refused.
  changed(type, data) {
    const state = this.state;
    if (data.key !== state.key) return;
    const record = type === "put" ? data : null;
    if (state.kind === "view" || state.kind === "gone") {
      if (record && record.revision === state.record?.revision) return;
      // Already shown gone: the watch's word on a delete this page made itself may come
      // after the answer to it (they travel on two connections), and must not turn
      // "Deleted." into "Deleted by another client.".
      if (!record && state.kind === "gone") return;
      if (record) this.set({ kind: "view", key: state.key, record, updated: true });
      else this.set({ kind: "gone", key: state.key, reason: data.reason });
    } else if (state.kind === "edit") {
      if (record && record.revision === state.record.revision) return;
      state.newer = record ? { record } : { reason: data.reason };
      this.showNewer();
    } else if (state.kind === "conflict" && record) {
      state.theirs = record;
      this.render();
    }
  }

  unauthorized(error) {
    if (!(error instanceof api.Unauthorized)) return false;
    this.events.unauthorized();
    return true;
  }

  render() {
    const state = this.state;
    const views = {
      none: () => [h("p", { class: "hint", text: "Select a key in the tree, or create one." })],
      loading: () => [heading(state.key), h("p", { class: "hint", text: "Loading…" })],
      error: () => [heading(state.key), alertText("error", state.message)],
      view: () => this.viewing(),
      edit: () => this.editing(),
      conflict: () => this.conflict(),
      gone: () => this.gone(),
      create: () => this.creating(),
    };
    this.element.replaceChildren(...views[state.kind]().filter((part) => part !== null));
    this.element.querySelector("[autofocus]")?.focus();
  }

  // --- viewing ------------------------------------------------------------------------------

  viewing() {
    const { record, updated } = this.state;
    const notice = `Changed by another client: now revision ${record.revision}.`;
    return [
      heading(record.key),
      updated ? status(notice) : null,
      facts(record),
      h("pre", { class: "value", tabindex: "0", "aria-label": "Value", text: pretty(record) }),
      h(
        "div",
        { class: "actions" },
        button("Edit", () => this.edit(this.state.record)),
        button("Delete…", () => this.remove(), { danger: true }),
      ),
    ];
  }

  gone() {
    const text = {
      missing: "No such key (it may have expired or been deleted).",
      mine: "Deleted.",
      deleted: "Deleted by another client.",
      expired: "Expired.",
    };
    return [heading(this.state.key), status(text[this.state.reason])];
  }

  // --- editing ------------------------------------------------------------------------------

  // Starts editing `record` (from `draft`, by default its value); the ttl field is filled in
  // to keep about the current expiry, since an overwrite without a ttl removes it.
  edit(record, draft = pretty(record), ttl = null) {
    ttl ??= record.expires_at ? String(secondsLeft(record.expires_at)) : "";
    this.set({ kind: "edit", key: record.key, record, draft, ttl, newer: null });
  }

  editing() {
    const state = this.state;
    const { record } = state;
    const error = h("p", { id: "edit-error", class: "error", role: "alert" });
    const value = valueEditor("edit-value", state.draft, "edit-error", () => {
      state.draft = value.value;
      jsonProblem(value, error, false);
    });
    value.setAttribute("autofocus", "");
    const form = h(
      "form",
      {
        class: "editor",
        onsubmit: (event) => {
          event.preventDefault();
          if (!jsonProblem(value, error, true)) this.save(state.draft, state.ttl, record.revision);
        },
      },
      h("label", { for: "edit-value", text: `Value (JSON) of revision ${record.revision}` }),
      value,
      error,
      ttlField("edit-ttl", state.ttl, (text) => (state.ttl = text), {
        keepsExpiry: Boolean(record.expires_at),
      }),
      h(
        "div",
        { class: "actions" },
        button("Save", undefined, { submit: true }),
        button("Cancel", () => this.set({ kind: "view", key: state.key, record })),
      ),
    );
    this.newerBox = h("div", { class: "newer", role: "status" });
    this.showNewer();
    return [heading(record.key), facts(record), this.newerBox, form];
  }

  // What the watch said of the record while it is being edited.
  showNewer() {
    const { kind, newer } = this.state;
    if (kind !== "edit") return;
    if (!newer) {
      this.newerBox.replaceChildren();
    } else if (newer.record) {
      const revision = newer.record.revision;
      const text =
        `Another client saved revision ${revision} meanwhile. Saving this edit will be ` +
        `refused; it is kept here. Revision ${revision}:`;
      const value = h("pre", { class: "value", text: pretty(newer.record) });
      this.newerBox.replaceChildren(h("div", { class: "notice" }, h("p", { text }), value));
    } else {
      const what = newer.reason === "expired" ? "it expired" : "another client deleted it";
      this.newerBox.replaceChildren(h("p", { class: "notice", text: `Meanwhile ${what}.` }));
    }
  }

  async save(draft, ttlText, revision) {
    const { key } = this.state;
    try {
      const record = await api.put(key, draft, revision, ttlValue(ttlText));
      this.events.saved(record);
      this.set({ kind: "view", key, record });
    } catch (error) {
      if (this.unauthorized(error)) return;
      if (error.status === 412 || error.status === 404) {
        await this.showConflict({ action: "save", draft, ttl: ttlText });
      } else {
        const box = this.element.querySelector("#edit-error");
        if (box) box.textContent = error.message;
      }
    }
  }

  // --- deleting -----------------------------------------------------------------------------

  async remove() {
    const { key, record } = this.state;
    if (!(await this.events.confirm(`Delete ${key} (revision ${record.revision})?`))) return;
    try {
      await api.remove(key, record.revision);
      this.events.deleted(key);
      this.set({ kind: "gone", key, reason: "mine" });
    } catch (error) {
      if (this.unauthorized(error)) return;
      if (error.status === 412 || error.status === 404) {
        await this.showConflict({ action: "delete" });
      } else {
        this.set({ kind: "error", key, message: error.message });
      }
    }
  }

  // --- a write refused: the record changed since it was shown -----------------------------

  async showConflict(conflict) {
    const { key } = this.state;
    let theirs = null;
    try {
      theirs = await api.get(key);
    } catch (error) {
      if (this.unauthorized(error)) return;
      if (error.status !== 404) {
        this.set({ kind: "error", key, message: error.message });
        return;
      }
    }
    this.set({ kind: "conflict", key, theirs, ...conflict });
  }

  conflict() {
    const { key, theirs, action, draft, ttl } = this.state;
    const what = action === "save" ? "Your edit was not saved" : "The key was not deleted";
    const why = theirs
      ? `it changed since you opened it: revision ${theirs.revision} is stored now (below).`
      : "it was deleted meanwhile.";
    const parts = [heading(key), alertText("conflict", `${what}: ${why}`)];
    if (theirs) {
      parts.push(
        h("h3", { text: `Stored now: revision ${theirs.revision}` }),
        facts(theirs),
        h("pre", { class: "value theirs", text: pretty(theirs) }),
      );
    }
    if (action === "save") {
      parts.push(h("h3", { text: "Your edit" }), h("pre", { class: "value mine", text: draft }));
    }
    const buttons = [];
    if (action === "save" && theirs) {
      const over = `Save my edit over revision ${theirs.revision}`;
      buttons.push(
        button(over, () => this.save(draft, ttl, theirs.revision), { danger: true }),
        button(`Edit again from revision ${theirs.revision}`, () => this.edit(theirs, draft, ttl)),
        button("Discard my edit", () => this.set({ kind: "view", key, record: theirs })),
      );
    } else if (action === "save") {
      buttons.push(
        button("Create it again with my edit", () => this.create(key, draft, ttlValue(ttl))),
        button("Discard my edit", () => this.clear()),
      );
    } else if (theirs) {
      buttons.push(button("Show it", () => this.set({ kind: "view", key, record: theirs })));
    } else {
      buttons.push(button("Close", () => this.clear()));
    }
    parts.push(h("div", { class: "actions" }, buttons));
    return parts;
  }

  // --- creating -----------------------------------------------------------------------------

  showCreate(prefix) {
    this.request += 1;
    this.set({ kind: "create", key: undefined, prefix });
    this.events.opened(null);
  }

  creating() {
    const error = h("p", { id: "create-error", class: "error", role: "alert" });
    const key = h("input", {
      id: "create-key",
      type: "text",
      required: true,
      autofocus: true,
      autocomplete: "off",
      spellcheck: "false",
      value: this.state.prefix ?? "",
    });
    const check = () => jsonProblem(value, error, false);
    const value = valueEditor("create-value", "{}", "create-error", check);
    value.rows = 8;
    let ttl = "";
    const submit = (event) => {
      event.preventDefault();
      const problem = keyProblem(key.value);
      if (problem) {
        error.textContent = problem;
        key.focus();
      } else if (!jsonProblem(value, error, true)) {
        this.create(key.value, value.value, ttlValue(ttl), error);
      }
    };
    const form = h(
      "form",
      { class: "editor", onsubmit: submit },
      h("label", { for: "create-key", text: "Key" }),
      key,
      h("label", { for: "create-value", text: "Value (JSON)" }),
      value,
      error,
      ttlField("create-ttl", "", (text) => (ttl = text)),
      h(
        "div",
        { class: "actions" },
        button("Create", undefined, { submit: true }),
        button("Cancel", () => this.clear()),
      ),
    );
    return [h("h2", { text: "New key" }), form];
  }

  async create(key, valueText, ttl, errorBox = null) {
    try {
      const record = await api.create(key, valueText, ttl);
      this.events.saved(record);
      this.request += 1;
      this.set({ kind: "view", key, record });
      this.events.opened(key);
    } catch (error) {
      if (this.unauthorized(error)) return;
      const message = error.status === 409 ? `The key ${key} exists already.` : error.message;
      if (errorBox) errorBox.textContent = message;
      else this.set({ kind: "error", key, message });
    }
  }
}

function status(text) {
  return h("p", { class: "notice", role: "status", text });
}

function alertText(kind, text) {
  return h("p", { class: kind, role: "alert", text });
}

function pretty(record) {
  return api.prettyJson(record.value);
}
