// Live tail: the tenant's events as they are appended, over the WebSocket
// GET /api/v1/events/stream (the credential in `access_token`), with event type filters
// (`order.*`), one entity, and an optional replay from a position. The newest event is on
// top; at most 500 are kept on screen. A dropped connection reconnects after the last
// position seen, so nothing is missed or shown twice.

import { webSocketUrl } from "../api.js";
import { compactJson, entityLink, field, formatNumber, h, replace, section, time } from "../ui.js";

const KEEP = 500;

export default {
  title: "Live tail",
  render(container, ctx) {
    const filters = h("input", { id: "tail-filters", name: "filters", value: ctx.params.get("filters") || "", placeholder: "order.*, user.signed_up" });
    const entityId = h("input", { id: "tail-entity", name: "entity_id", value: ctx.params.get("entity") || "" });
    const from = h("input", { id: "tail-from", name: "from_position", inputmode: "numeric", value: ctx.params.get("from") || "", placeholder: "live only" });
    const startButton = h("button", { type: "submit", class: "primary", id: "tail-start" }, "Start");
    const stopButton = h("button", { type: "button", id: "tail-stop", disabled: true }, "Stop");
    const clearButton = h("button", { type: "button" }, "Clear");
    const state = h("span", { id: "tail-state", class: "badge" }, "stopped");
    const counter = h("span", { id: "tail-count", class: "muted", "aria-live": "polite" }, "0 events");
    const problem = h("div", { "aria-live": "assertive" });
    const rows = h("tbody", { id: "tail-rows" });

    let socket = null;
    let wanted = false;
    let lastPosition = null;
    let received = 0;
    let retry = 0;
    let retryTimer = 0;

    function setState(text, kind) {
      state.textContent = text;
      state.className = `badge ${kind || ""}`;
    }

    function show(event) {
      lastPosition = event.position;
      received += 1;
      counter.textContent = `${formatNumber(received)} events`;
      const row = h(
        "tr",
        { class: "new", "data-position": event.position },
        h("td", { class: "num" }, formatNumber(event.position)),
        h("td", {}, time(event.timestamp)),
        h("td", {}, entityLink(event.entity_id)),
        h("td", {}, event.event_type),
        h("td", {}, h("code", {}, compactJson(event.payload, 200))),
      );
      rows.prepend(row);
      while (rows.children.length > KEEP) rows.lastChild.remove();
    }

    function connect() {
      const types = filters.value.split(",").map((f) => f.trim()).filter(Boolean);
      const subscribe = { type: "subscribe", filters: types };
      if (entityId.value.trim()) subscribe.entity_id = entityId.value.trim();
      // A reconnection resumes after the last event shown; a first start uses the form.
      if (lastPosition !== null) subscribe.from_position = lastPosition;
      else if (from.value.trim() !== "") subscribe.from_position = Number(from.value.trim());
      setState("connecting…");
      socket = new WebSocket(webSocketUrl("/api/v1/events/stream"));
      socket.onopen = () => {
        retry = 0;
        socket.send(JSON.stringify(subscribe));
        setState(subscribe.from_position === undefined ? "live" : "replaying…", "good");
      };
      socket.onmessage = (message) => {
        let frame;
        try {
          frame = JSON.parse(message.data);
        } catch {
          return;
        }
        if (frame.type === "replay") show(frame.event);
        else if (frame.type === "replay_complete") setState("live", "good");
        else if (frame.type === "error") replace(problem, h("div", { class: "notice error", role: "alert" }, `The server refused the subscription: ${frame.message}`));
        else if (frame.position !== undefined) show(frame);
      };
      socket.onclose = (close) => {
        socket = null;
        if (!wanted) {
          setState("stopped");
          return;
        }
        // 1008: this tab read too slowly; 1001: the server is going away; others: the network.
        const why = close.reason ? ` (${close.reason})` : "";
        retry = Math.min(retry + 1, 6);
        const wait = 500 * 2 ** (retry - 1);
        setState(`disconnected${why}; reconnecting in ${Math.round(wait / 1000)} s`, "bad");
        retryTimer = setTimeout(() => wanted && connect(), wait);
      };
    }

    function start() {
      stop();
      replace(problem);
      const position = from.value.trim();
      if (position !== "" && !/^\d+$/.test(position)) {
        replace(problem, h("div", { class: "notice error", role: "alert" }, "From position must be a whole number (0 replays everything)."));
        return;
      }
      wanted = true;
      lastPosition = null;
      startButton.textContent = "Restart";
      stopButton.disabled = false;
      connect();
    }

    function stop() {
      wanted = false;
      clearTimeout(retryTimer);
      if (socket) socket.close(1000, "stopped");
      socket = null;
      stopButton.disabled = true;
      setState("stopped");
    }

    const form = h(
      "form",
      { class: "row", id: "tail-form", "aria-label": "What to follow" },
      field("Event types", filters, "Comma separated; order.* is order and order.anything. Empty: every type."),
      field("Entity", entityId, "Optional: one entity's events."),
      field("Replay from position", from, "Optional: 0 replays the whole log first."),
      startButton,
      stopButton,
      clearButton,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      start();
    });
    stopButton.addEventListener("click", stop);
    clearButton.addEventListener("click", () => {
      rows.replaceChildren();
      received = 0;
      counter.textContent = "0 events";
    });

    replace(
      container,
      section("Follow", form, h("div", { class: "status-line" }, state, counter), problem),
      section(
        "Events, newest first",
        h(
          "div",
          { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Live events" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["Position", "Time", "Entity", "Type", "Payload"].map((c) => h("th", { scope: "col" }, c)))),
            rows,
          ),
        ),
      ),
    );
    start();
    return stop;
  },
};
