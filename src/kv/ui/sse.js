// Server-Sent Events parsed by hand: the browser's EventSource cannot send an Authorization
// header, so the page reads /watch with fetch() and feeds the text it receives here.
// Follows the HTML standard's event stream format: lines end in CRLF, LF or CR; a blank
// line ends an event; a line starting with ":" is a comment; "field: value" loses one space.

export class EventParser {
  constructor() {
    this.pending = ""; // the text after the last complete line
    this.afterCR = false; // the last piece ended in CR: a LF first in the next is its pair
    this.type = "";
    this.data = [];
  }

  // Takes the next piece of text (any split, even inside a line or a CRLF); returns the
  // events it completes, each as {type, data}.
  push(text) {
    if (text === "") return [];
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1);
    this.afterCR = text.endsWith("\r");
    const lines = (this.pending + text).split(/\r\n|\r|\n/);
    this.pending = lines.pop();
    const events = [];
    this.fieldsFrom(lines, events);
    return events;
  }

  fieldsFrom(lines, events) {
    for (const line of lines) {
      if (line === "") {
        if (this.data.length > 0) {
          events.push({ type: this.type || "message", data: this.data.join("\n") });
        }
        this.type = "";
        this.data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: kv's heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      // "id" and "retry" are not used by kv
    }
  }
}
