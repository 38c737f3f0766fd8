// Building the DOM without markup: text goes in as text nodes, so a key or a value is never
// read as HTML.

// h("button", {class: "x", onclick: f, "aria-label": "y"}, "text", child, ...)
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "value" || name === "checked") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

export function $(selector) {
  return document.querySelector(selector);
}

// "in 4 min 59 s", "in 2 h 5 min", "in 3 d 4 h"; "expired" once `expiresAt` has passed.
export function remaining(expiresAt, now = Date.now()) {
  const seconds = Math.ceil((Date.parse(expiresAt) - now) / 1000);
  if (seconds <= 0) return "expired";
  const units = [
    ["d", 86400],
    ["h", 3600],
    ["min", 60],
    ["s", 1],
  ];
  const parts = [];
  let left = seconds;
  for (const [name, size] of units) {
    if (left >= size || (parts.length > 0 && parts.length < 2)) {
      parts.push(`${Math.floor(left / size)} ${name}`);
      left %= size;
    }
    if (parts.length === 2) break;
  }
  return `in ${parts.join(" ")}`;
}

// Whole seconds until `expiresAt` (at least 1), for a ttl field that keeps the expiry.
export function secondsLeft(expiresAt, now = Date.now()) {
  return Math.max(1, Math.ceil((Date.parse(expiresAt) - now) / 1000));
}
