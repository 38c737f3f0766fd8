// The page: asks for the token when the server wants one, shows the keys under a prefix as a
// tree and the selected record beside it, and keeps both current through the watch.
//
// Modules: api.js (HTTP, the token), sse.js (the event stream's format), live.js (the watch,
// reconnecting), keys.js (what is known of the keys), tree.js and record.js (the two panes).

import * as api from "./api.js";
import { $, remaining } from "./dom.js";
import { Keys } from "./keys.js";
import { Live } from "./live.js";
import { RecordPanel } from "./record.js";
import { Tree } from "./tree.js";

const view = {
  prefix: "",
  limit: 100,
  listed: false, // listed since the prefix was chosen (with or without a watch)
};

const keys = new Keys();

const tree = new Tree($("#tree"), keys, {
  open: (key) => panel.open(key),
  expand(prefix) {
    // Its first page, once: opening it again later does not load the next one.
    const listing = keys.listings.get(prefix);
    if (!listing || (listing.pages === 0 && !listing.loading)) loadPage(prefix);
  },
  more: (prefix) => loadPage(prefix),
});

const panel = new RecordPanel($("#record"), {
  opened: (key) => {
    tree.select(key);
    remember();
  },
  saved: (record) => {
    keys.put(record);
    changed();
  },
  deleted: (key) => {
    keys.remove(key);
    changed();
  },
  unauthorized: () => askForToken(),
  confirm: (text) => confirm(text),
});

const live = new Live({
  ready() {
    setLive("live", "Live");
    $("#banner").hidden = true;
    relist();
    panel.refresh();
  },
  change(type, data) {
    keys.change(type, data);
    panel.changed(type, data);
    changed();
  },
  lost(reason, waitMs) {
    setLive("lost", "Reconnecting…");
    const banner = $("#banner");
    banner.textContent =
      `Live updates stopped: ${reason}. What is shown may be out of date; ` +
      `reconnecting in ${Math.ceil(waitMs / 1000)} s…`;
    banner.hidden = false;
    if (!view.listed) relist(); // show the keys even while the watch cannot be had
  },
  unauthorized: () => askForToken(),
});

// --- listing ------------------------------------------------------------------------------

function show(prefix) {
  view.prefix = prefix;
  view.listed = false;
  keys.reset(prefix);
  changed();
  setLive("connecting", "Connecting…");
  live.start(prefix); // lists on `ready`
  remember();
}

// The CONTRACT's mirroring recipe: once the watch is ready, list; the events received since
// are applied over each page as it arrives (keys.js).
async function relist() {
  view.listed = true;
  keys.reset(view.prefix);
  changed();
  const generation = keys.generation;
  if (!(await loadPage(view.prefix)) || generation !== keys.generation) return;
  const folders = [...tree.expanded].filter(
    (folder) => folder.startsWith(keys.filter) && !keys.complete(folder),
  );
  await Promise.all(folders.map((folder) => loadPage(folder)));
}

// The next page of `prefix`; false when it failed (the tree offers to try again).
async function loadPage(prefix) {
  try {
    await keys.loadPage(prefix, view.limit);
    return true;
  } catch (error) {
    if (error instanceof api.Unauthorized) {
      askForToken();
      return false;
    }
    return false;
  } finally {
    if ($("#login").hidden) reveal(); // not when the token was refused
    changed();
  }
}

function changed() {
  tree.schedule();
  const listing = keys.listings.get(keys.filter);
  const count = keys.loadedCount;
  const under = keys.filter ? ` under “${keys.filter}”` : "";
  let text;
  if (!listing || (listing.loading && listing.pages === 0)) text = "Listing…";
  else if (listing.error && listing.pages === 0) text = `Could not list: ${listing.error.message}`;
  else if (keys.complete(keys.filter)) text = `${count} ${plural(count, "key")}${under}`;
  else {
    text = `${count} ${plural(count, "key")}${under} listed so far ` +
      `(${listing.pages} ${plural(listing.pages, "page")} of ${view.limit}; more to load)`;
  }
  $("#summary").textContent = text;
}

function plural(count, word) {
  return count === 1 ? word : `${word}s`;
}

// --- the token ----------------------------------------------------------------------------

// After a 401 (or when asked to forget the token): nothing of the data stays on the page.
function askForToken(message = null) {
  const refused = api.token.get() !== null;
  live.stop();
  api.token.clear();
  keys.reset("");
  tree.render();
  panel.clear();
  $("#main").hidden = true;
  $("#banner").hidden = true;
  $("#forget-token").hidden = true;
  setLive("off", "Not connected");
  $("#login").hidden = false;
  $("#login-message").textContent =
    message ?? (refused ? "The server refused the token: give it again." : "");
  $("#token").value = "";
  $("#token").focus();
}

// The data came (or an error that is not about the token): show the panes.
function reveal() {
  $("#main").hidden = false;
  $("#forget-token").hidden = api.token.get() === null;
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.token.set($("#token").value);
  $("#login").hidden = true;
  start();
});

$("#forget-token").addEventListener("click", () => askForToken("Token forgotten."));

// --- the rest of the page -----------------------------------------------------------------

function setLive(state, text) {
  const status = $("#live-status");
  status.dataset.state = state;
  status.textContent = text;
}

function confirm(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
  });
}

// The prefix and the open key are kept in the address (#prefix=…&key=…), for a reload.
function remember() {
  const state = new URLSearchParams();
  if (view.prefix) state.set("prefix", view.prefix);
  if (panel.key) state.set("key", panel.key);
  const hash = state.size ? `#${state}` : "";
  history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
}

$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  view.limit = Number($("#page-size").value);
  show($("#prefix").value);
});

$("#new-key").addEventListener("click", () => {
  const key = panel.key;
  panel.showCreate(key ? key.slice(0, key.lastIndexOf("/") + 1) : view.prefix);
});

// How long each shown expiry has left, every second.
setInterval(() => {
  for (const element of document.querySelectorAll(".remaining[data-expires]")) {
    element.textContent = remaining(element.dataset.expires);
  }
}, 1000);

// Leaving the page (or its going into the back-forward cache) closes the watch; coming back
// from that cache opens it again and lists afresh.
addEventListener("pagehide", () => live.stop());
addEventListener("pageshow", (event) => {
  if (event.persisted && $("#login").hidden) show(view.prefix);
});

function start() {
  const saved = new URLSearchParams(location.hash.slice(1));
  $("#prefix").value = saved.get("prefix") ?? "";
  show($("#prefix").value);
  const key = saved.get("key");
  if (key) panel.open(key);
}

start();
