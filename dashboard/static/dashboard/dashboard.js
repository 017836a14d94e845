// The live dashboard: first paint from the server's JSON, then everything over the WebSocket
// of SPEC §7 (/ws/, session cookie). Approve / reject call the REST API with the session and
// the CSRF token. Plain ES module, no build step; DOM built with textContent (no innerHTML).

const API = "/api/v1";
const TRADE_ROWS = 25;
const SUBSCRIBE_BURST = 15; // the server allows 20 client messages per second
const PING_MS = 30000;
const HISTORY_DAYS = 7;

const state = JSON.parse(document.getElementById("dashboard-state").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const operator = state.user.operator;
const username = state.user.username;

const agents = new Map(); // id → {agent, portfolio, history: [{t, v}], row}
const trades = new Map(); // id → trade JSON
const approvals = new Map(); // id → approval JSON (+ agent_name, owner, order)
const prices = new Map(); // symbol → {price, timestamp}
const lastSeq = new Map(); // `${agentId}:${channel}` → last seq received
let ordersDay = state.orders_day; // the UTC day the "Orders today" counts are of

const $ = (id) => document.getElementById(id);
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const plain = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });

// --- small helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Display only: the server keeps money as decimals; numbers here are for formatting.
const num = (value) => (value === null || value === undefined || value === "" ? null : Number(value));
const fmtMoney = (value) => (num(value) === null ? "—" : money.format(num(value)));
const fmtQty = (value) => (num(value) === null ? "—" : plain.format(num(value)));
const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "—");
const dateTime = new Intl.DateTimeFormat("en-US", {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
// A deadline reads as a countdown and a date ("in 23 h 59 min · Dec 4, 08:53 AM"): a time of
// day alone looks past when it is tomorrow's.
function fmtExpiry(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  const minutes = Math.round((when.getTime() - Date.now()) / 60000);
  let left;
  if (minutes <= 0) left = "expired";
  else if (minutes < 60) left = `in ${minutes} min`;
  else left = `in ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  return `${left} · ${dateTime.format(when)}`;
}
// Statuses as words: "pending_approval" → "pending approval".
const statusWords = (status) => String(status).replaceAll("_", " ");
const orderText = (t) => `${t.side} ${fmtQty(t.quantity)} ${t.symbol}`;

function statusBadge(status, field = "status") {
  return el("span", { class: `status status-${status}`, dataset: { field } }, statusWords(status));
}

function setText(node, text) {
  if (node && node.textContent !== text) {
    node.textContent = text;
    node.classList.remove("flash");
    void node.offsetWidth; // restart the highlight animation
    node.classList.add("flash");
  }
}

function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 50);
}

function notice(text, kind = "error") {
  const box = el("div", { class: `notice ${kind}` }, text);
  $("notices").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 15000 : 6000);
}

async function api(path, { method = "GET", body } = {}) {
  const response = await fetch(API + path, {
    method,
    credentials: "same-origin",
    headers: {
      Accept: "application/json",
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
      ...(method !== "GET" ? { "X-CSRFToken": csrfToken } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) {
    const problem = new Error(payload.detail || payload.title || `HTTP ${response.status}`);
    problem.status = response.status;
    problem.title = payload.title || `HTTP ${response.status}`;
    throw problem;
  }
  return payload;
}

// --- prices -------------------------------------------------------------------------------------

function priceOf(symbol, fallback) {
  const known = prices.get(symbol);
  return known ? num(known.price) : num(fallback);
}

function renderTicker() {
  const list = $("ticker");
  for (const symbol of state.symbols) {
    const quote = prices.get(symbol);
    let item = list.querySelector(`[data-symbol="${CSS.escape(symbol)}"]`);
    if (!item) {
      item = el(
        "li",
        { dataset: { symbol } },
        el("span", { class: "symbol" }, symbol),
        el("span", { class: "num", dataset: { field: "price" } }, "—"),
        el("span", { class: "change", dataset: { field: "change" }, "aria-hidden": "true" }),
      );
      list.append(item);
    }
    if (quote) setText(item.querySelector('[data-field="price"]'), fmtMoney(quote.price));
  }
}

function onPrice({ symbol, price }, timestamp) {
  const before = prices.get(symbol);
  prices.set(symbol, { price, timestamp });
  renderTicker();
  const item = $("ticker").querySelector(`[data-symbol="${CSS.escape(symbol)}"]`);
  if (item && before) {
    const delta = num(price) - num(before.price);
    const arrow = item.querySelector('[data-field="change"]');
    arrow.textContent = delta > 0 ? "▲" : delta < 0 ? "▼" : "";
    arrow.className = `change ${delta > 0 ? "up" : delta < 0 ? "down" : ""}`;
  }
  for (const entry of agents.values()) {
    if ((entry.portfolio?.positions || []).some((p) => p.symbol === symbol)) renderAgent(entry);
  }
}

// --- agents -------------------------------------------------------------------------------------

function valuation(entry) {
  // Positions valued at the live ticker price; P&L is value against the budget.
  const portfolio = entry.portfolio || {};
  const cash = num(portfolio.cash_balance ?? entry.agent.cash_balance);
  let positions = 0;
  for (const p of portfolio.positions || []) {
    positions += num(p.quantity) * priceOf(p.symbol, p.current_price);
  }
  const total = cash + positions;
  return {
    cash,
    available: num(portfolio.available_cash ?? entry.agent.available_cash),
    positions,
    total,
    pnl: total - num(entry.agent.budget),
  };
}

function sparkline(entry, total) {
  const points = entry.history.map((p) => p.v);
  points.push(total);
  const width = 140;
  const height = 36;
  const min = Math.min(...points);
  const max = Math.max(...points);
  const span = max - min || 1;
  const step = points.length > 1 ? width / (points.length - 1) : width;
  const coords = points
    .map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`)
    .join(" ");
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute(
    "aria-label",
    `Portfolio value of ${entry.agent.name}: ${fmtMoney(points[0])} to ${fmtMoney(total)} ` +
      `over the last ${HISTORY_DAYS} days`,
  );
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("points", points.length > 1 ? coords : `0,${height / 2} ${width},${height / 2}`);
  svg.append(line);
  return svg;
}

function renderAgent(entry) {
  const value = valuation(entry);
  const { agent } = entry;
  if (!entry.row) {
    const cells = [
      el("th", { scope: "row" }, el("span", { dataset: { field: "name" } }, agent.name)),
      operator ? el("td", {}, agent.owner) : null,
      el("td", {}, agent.strategy.replace("_", " ")),
      el("td", {}, statusBadge(agent.status, "agent-status")),
      el("td", { class: "num", dataset: { field: "orders-today" } }),
      el("td", { class: "num", dataset: { field: "cash" } }),
      el("td", { class: "num", dataset: { field: "available" } }),
      el("td", { class: "num", dataset: { field: "positions" } }),
      el("td", { class: "num", dataset: { field: "total" } }),
      el("td", { class: "num", dataset: { field: "pnl" } }),
      el("td", { dataset: { field: "chart" } }),
    ];
    entry.row = el("tr", { dataset: { agentId: agent.id } }, cells);
    $("agents-body").append(entry.row);
  }
  const row = entry.row;
  const status = row.querySelector('[data-field="agent-status"]');
  status.textContent = statusWords(agent.status);
  status.className = `status status-${agent.status}`;
  const orders = row.querySelector('[data-field="orders-today"]');
  setText(orders, `${entry.ordersToday} / ${entry.dailyLimit}`);
  orders.classList.toggle("down", entry.ordersToday >= entry.dailyLimit);
  setText(row.querySelector('[data-field="cash"]'), fmtMoney(value.cash));
  setText(row.querySelector('[data-field="available"]'), fmtMoney(value.available));
  setText(row.querySelector('[data-field="positions"]'), fmtMoney(value.positions));
  setText(row.querySelector('[data-field="total"]'), fmtMoney(value.total));
  const pnl = row.querySelector('[data-field="pnl"]');
  setText(pnl, (value.pnl > 0 ? "+" : "") + fmtMoney(value.pnl));
  pnl.classList.toggle("up", value.pnl > 0);
  pnl.classList.toggle("down", value.pnl < 0);
  row.querySelector('[data-field="chart"]').replaceChildren(sparkline(entry, value.total));
  $("agents-empty").hidden = agents.size > 0;
}

async function loadHistory(entry) {
  try {
    const body = await api(`/agents/${entry.agent.id}/portfolio/history?days=${HISTORY_DAYS}`);
    const points = Array.isArray(body) ? body : body.results || [];
    entry.history = points.map((p) => ({ t: p.timestamp, v: num(p.total_value) }));
    renderAgent(entry);
  } catch (error) {
    notice(`Could not load the value history of ${entry.agent.name}: ${error.message}`);
  }
}

function onPortfolio(agentId, portfolio) {
  const entry = agents.get(agentId);
  if (!entry) return;
  entry.portfolio = portfolio;
  Object.assign(entry.agent, {
    cash_balance: portfolio.cash_balance,
    reserved_cash: portfolio.reserved_cash,
    available_cash: portfolio.available_cash,
    realized_pnl: portfolio.realized_pnl,
  });
  entry.history.push({ t: portfolio.updated_at, v: num(portfolio.total_value) });
  renderAgent(entry);
}

async function resyncAgent(agentId) {
  // After a `gap` (events no longer buffered): read the current state over REST.
  const entry = agents.get(agentId);
  if (!entry) return;
  try {
    onPortfolio(agentId, await api(`/agents/${agentId}/portfolio`));
    const page = await api(`/agents/${agentId}/trades?page_size=${TRADE_ROWS}`);
    for (const trade of page.results || page) upsertTrade(trade, { quiet: true });
  } catch (error) {
    notice(`Could not refresh ${entry.agent.name}: ${error.message}`);
  }
}

// --- quotas -------------------------------------------------------------------------------------

function quotaAlert(agentId, kind, text) {
  const box = $("quota-alerts");
  const selector = `[data-agent-id="${CSS.escape(agentId)}"][data-kind="${kind}"]`;
  if (box.querySelector(selector)) return;
  box.append(el("p", { class: "notice error", dataset: { agentId, kind } }, text));
}

function onOrderAccepted(agentId, trade) {
  // Every trade.created is an order the server accepted: the count its daily limit checks.
  const entry = agents.get(agentId);
  if (!entry) return;
  const day = new Date(trade.created_at).toISOString().slice(0, 10);
  if (day > ordersDay) {
    // A new UTC day: every agent's count starts again and the daily quotas reset.
    ordersDay = day;
    $("quota-alerts").replaceChildren();
    for (const other of agents.values()) {
      other.ordersToday = 0;
      if (other.row) renderAgent(other);
    }
  }
  if (day !== ordersDay) return;
  entry.ordersToday += 1;
  renderAgent(entry);
  if (entry.ordersToday >= entry.dailyLimit) {
    quotaAlert(
      agentId,
      "daily_trade_limit",
      `${entry.agent.name}: daily trade limit of ${entry.dailyLimit} orders reached; ` +
        "orders refused (429) until midnight UTC",
    );
  }
}

const PERIOD_UNITS = { hourly: "hour", daily: "day", weekly: "week", monthly: "month" };

function untilText(iso) {
  const when = new Date(iso);
  if (when.getUTCHours() === 0 && when.getUTCMinutes() === 0) return "midnight UTC";
  return `${when.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function onQuotaRefused(agentId, data) {
  // The metering service's quota refused the agent's orders (the server sends this once a period).
  const at = new Date(data.refused_at).toISOString().slice(11, 16);
  const unit = PERIOD_UNITS[data.period] || data.period;
  const box = $("quota-alerts");
  box.querySelector(`[data-agent-id="${CSS.escape(agentId)}"][data-kind="metering_quota"]`)?.remove();
  quotaAlert(
    agentId,
    "metering_quota",
    `${agentName(agentId)}: the metering service refused an order at ${at} UTC, its ` +
      `${data.metric_code} quota of ${data.limit} per ${unit} being used up; orders refused ` +
      `(429) until ${untilText(data.resets_at)}`,
  );
}

// --- trades -------------------------------------------------------------------------------------

function agentName(agentId) {
  return agents.get(agentId)?.agent.name ?? agentId.slice(0, 8);
}

function tradeRow(trade) {
  return el(
    "tr",
    { dataset: { tradeId: trade.id, agentId: trade.agent_id } },
    el("td", {}, el("time", { datetime: trade.created_at }, fmtTime(trade.created_at))),
    el("td", {}, agentName(trade.agent_id)),
    el("td", { dataset: { field: "order" } }, orderText(trade)),
    el("td", {}, trade.type),
    el("td", {}, statusBadge(trade.status)),
    el("td", { class: "num", dataset: { field: "fill-price" } }, fmtMoney(trade.avg_fill_price)),
    el("td", { class: "num", dataset: { field: "notional" } }, fmtMoney(trade.notional)),
  );
}

function renderTrades() {
  const newest = [...trades.values()]
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))
    .slice(0, TRADE_ROWS);
  const body = $("trades-body");
  const keep = new Set(newest.map((t) => t.id));
  for (const row of [...body.rows]) if (!keep.has(row.dataset.tradeId)) row.remove();
  newest.forEach((trade, index) => {
    let row = body.querySelector(`tr[data-trade-id="${trade.id}"]`);
    const fresh = tradeRow(trade);
    if (!row) {
      row = fresh;
      row.classList.add("flash");
    } else if (row.dataset.status !== trade.status) {
      row.replaceWith(fresh);
      row = fresh;
      row.classList.add("flash");
    }
    row.dataset.status = trade.status;
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
  });
  $("trades-empty").hidden = trades.size > 0;
}

function upsertTrade(trade, { quiet = false } = {}) {
  const before = trades.get(trade.id);
  trades.set(trade.id, trade);
  renderTrades();
  const approval = [...approvals.values()].find((a) => a.trade_id === trade.id);
  if (approval) {
    approval.order = trade;
    renderApprovals();
  }
  if (!quiet && (!before || before.status !== trade.status)) {
    announce(`${agentName(trade.agent_id)}: ${orderText(trade)} ${statusWords(trade.status)}`);
  }
}

// --- approvals ----------------------------------------------------------------------------------

function renderApprovals() {
  if (!operator) return;
  const body = $("approvals-body");
  const pending = [...approvals.values()]
    .filter((a) => a.status === "pending")
    .sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
  body.replaceChildren(
    ...pending.map((approval) => {
      const order = approval.order || trades.get(approval.trade_id);
      const summary = order ? orderText(order) : "order";
      const agentLabel = approval.agent_name || agentName(approval.agent_id);
      const approved = (approval.decisions || []).filter((d) => d.decision === "approved");
      const mine = (approval.decisions || []).some((d) => d.approver === username);
      const own = approval.owner === username;
      const actions = own
        ? el("td", {}, "your agent")
        : el(
            "td",
            { class: "actions" },
            el(
              "button",
              {
                type: "button",
                class: "approve",
                disabled: mine,
                "aria-label": `Approve ${summary} for ${agentLabel}`,
                onclick: (event) => approve(approval, event.currentTarget),
              },
              mine ? "Approved by you" : "Approve",
            ),
            el(
              "button",
              {
                type: "button",
                class: "reject",
                "aria-label": `Reject ${summary} for ${agentLabel}`,
                onclick: () => askReject(approval, summary, agentLabel),
              },
              "Reject",
            ),
          );
      return el(
        "tr",
        { dataset: { approvalId: approval.id, tradeId: approval.trade_id } },
        el("th", { scope: "row" }, agentLabel),
        el("td", {}, summary),
        el("td", { class: "num" }, fmtMoney(approval.amount)),
        el("td", {}, approval.priority),
        el("td", {}, approval.risk ? `${approval.risk.level} (${approval.risk.score})` : "—"),
        el("td", {}, `${approved.length} / ${approval.approvals_required}`),
        el(
          "td",
          {},
          el(
            "time",
            { datetime: approval.expires_at, dataset: { field: "expires" } },
            fmtExpiry(approval.expires_at),
          ),
        ),
        actions,
      );
    }),
  );
  $("approvals-count").textContent = pending.length ? String(pending.length) : "";
  $("approvals-empty").hidden = pending.length > 0;
}

async function ensureOrder(approval) {
  if (approval.order || trades.has(approval.trade_id)) return;
  try {
    approval.order = await api(`/agents/${approval.agent_id}/trades/${approval.trade_id}`);
    renderApprovals();
  } catch {
    // The row still shows the amount; the admin has the details.
  }
}

function onApproval(approval, event) {
  const known = approvals.get(approval.id) || {};
  const merged = { ...known, ...approval };
  if (!merged.agent_name && agents.has(approval.agent_id)) {
    merged.agent_name = agents.get(approval.agent_id).agent.name;
    merged.owner = agents.get(approval.agent_id).agent.owner;
  }
  approvals.set(approval.id, merged);
  renderApprovals();
  if (event === "approval.requested") {
    ensureOrder(merged);
    announce(`New approval request for ${merged.agent_name || "an agent"}: ${fmtMoney(approval.amount)}`);
  } else if (event === "approval.completed") {
    announce(`Approval request ${approval.status} (${merged.agent_name || "agent"})`);
  }
}

async function approve(approval, button) {
  button.disabled = true;
  try {
    const result = await api(`/oversight/requests/${approval.id}/approve`, { method: "POST", body: {} });
    onApproval(result, "decided");
    notice(
      result.status === "pending"
        ? "Approval recorded; another operator must approve too."
        : "Approved: the order is being executed.",
      "ok",
    );
  } catch (error) {
    notice(`Could not approve: ${error.title}: ${error.message}`);
    button.disabled = false;
  }
}

let rejecting = null;

function askReject(approval, summary, agentLabel) {
  rejecting = approval;
  $("reject-summary").textContent = `${agentLabel}: ${summary}, ${fmtMoney(approval.amount)}`;
  $("reject-reason").value = "";
  $("reject-dialog").showModal();
  $("reject-reason").focus();
}

async function submitReject(event) {
  event.preventDefault();
  const reason = $("reject-reason").value.trim();
  if (!reason) {
    $("reject-reason").setCustomValidity("A reason is required to reject.");
    $("reject-reason").reportValidity();
    return;
  }
  $("reject-reason").setCustomValidity("");
  const approval = rejecting;
  $("reject-dialog").close();
  try {
    const result = await api(`/oversight/requests/${approval.id}/reject`, {
      method: "POST",
      body: { reason },
    });
    onApproval(result, "decided");
    notice("Rejected: the order's funds are released.", "ok");
  } catch (error) {
    notice(`Could not reject: ${error.title}: ${error.message}`);
  }
}

// --- the WebSocket ------------------------------------------------------------------------------

let socket = null;
let attempts = 0;
let pingTimer = null;

function setConnection(kind, text) {
  const node = $("connection-state");
  node.dataset.state = kind;
  node.textContent = text;
}

function subscriptions() {
  const messages = [{ action: "subscribe", channel: "market" }];
  if (operator) messages.push({ action: "subscribe", channel: "oversight" });
  for (const agentId of agents.keys()) {
    for (const channel of ["trades", "portfolio"]) {
      const message = { action: "subscribe", channel, agent_id: agentId };
      const seq = lastSeq.get(`${agentId}:${channel}`);
      if (seq !== undefined) message.since_seq = seq;
      messages.push(message);
    }
  }
  return messages;
}

function sendPaced(current, messages) {
  // Bursts below the server's per-second message limit.
  const burst = messages.slice(0, SUBSCRIBE_BURST);
  for (const message of burst) current.send(JSON.stringify(message));
  if (messages.length > SUBSCRIBE_BURST) {
    setTimeout(() => {
      if (socket === current && current.readyState === WebSocket.OPEN) {
        sendPaced(current, messages.slice(SUBSCRIBE_BURST));
      }
    }, 1100);
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const current = new WebSocket(`${scheme}://${location.host}/ws/`);
  socket = current;
  setConnection("connecting", attempts ? "reconnecting…" : "connecting…");
  current.addEventListener("open", () => {
    attempts = 0;
    setConnection("open", "connected");
    sendPaced(current, subscriptions());
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (current.readyState === WebSocket.OPEN) current.send(JSON.stringify({ action: "ping" }));
    }, PING_MS);
  });
  current.addEventListener("message", (message) => {
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return;
    }
    handleFrame(frame);
  });
  current.addEventListener("close", (event) => {
    clearInterval(pingTimer);
    if (socket !== current) return;
    if (event.code === 4401) {
      setConnection("closed", "signed out");
      notice("Your session has ended: sign in again to see live updates.");
      return;
    }
    const delay = Math.min(30000, 500 * 2 ** attempts) * (0.75 + Math.random() / 2);
    attempts += 1;
    setConnection("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s…`);
    setTimeout(connect, delay);
  });
}

function handleFrame(frame) {
  switch (frame.type) {
    case "event":
      return handleEvent(frame);
    case "gap":
      return resyncAgent(frame.agent_id);
    case "error":
      notice(`Live updates: ${frame.detail || frame.code}`);
      return;
    default:
      return; // subscribed, unsubscribed, pong
  }
}

function handleEvent({ event, channel, agent_id: agentId, data, seq, timestamp }) {
  if (event === "market.price") return onPrice(data, timestamp);
  if (agentId && typeof seq === "number" && channel !== "oversight") {
    const key = `${agentId}:${channel}`;
    if (seq <= (lastSeq.get(key) ?? -1)) return; // already applied (replay overlap)
    lastSeq.set(key, seq);
  }
  switch (event) {
    case "trade.created":
      onOrderAccepted(agentId, data);
      return upsertTrade(data);
    case "trade.updated":
    case "trade.filled":
    case "trade.cancelled":
      return upsertTrade(data);
    case "portfolio.update":
      return onPortfolio(agentId, data);
    case "agent.terminated": {
      const entry = agents.get(agentId);
      if (entry) {
        Object.assign(entry.agent, data);
        renderAgent(entry);
        announce(`${entry.agent.name} was terminated`);
      }
      return;
    }
    case "approval.requested":
    case "approval.completed":
      return onApproval(data, event);
    case "quota.warning":
      if (data.refused) return onQuotaRefused(agentId, data);
      notice(`Quota warning for ${agentName(agentId)}: ${data.metric_code || ""} at ${data.usage_percentage ?? "?"}%`, "ok");
      return;
    default:
      return;
  }
}

// --- start --------------------------------------------------------------------------------------

function start() {
  for (const quote of state.prices) prices.set(quote.symbol, quote);
  renderTicker();
  for (const agent of state.agents) {
    const {
      portfolio,
      event_seq: seq,
      orders_today: ordersToday,
      daily_trade_limit: dailyLimit,
      ...rest
    } = agent;
    const entry = { agent: rest, portfolio, ordersToday, dailyLimit, history: [], row: null };
    agents.set(agent.id, entry);
    if (typeof seq === "number") {
      // Resume from what the page was rendered with: nothing between render and subscribe is lost.
      lastSeq.set(`${agent.id}:trades`, seq);
      lastSeq.set(`${agent.id}:portfolio`, seq);
    }
    renderAgent(entry);
    loadHistory(entry);
  }
  $("agents-empty").hidden = agents.size > 0;
  for (const trade of state.trades) trades.set(trade.id, trade);
  renderTrades();
  for (const approval of state.approvals) approvals.set(approval.id, approval);
  renderApprovals();
  $("reject-form").addEventListener("submit", submitReject);
  $("reject-cancel").addEventListener("click", () => $("reject-dialog").close());
  $("reject-reason").addEventListener("input", () => $("reject-reason").setCustomValidity(""));
  // Countdowns move on without a re-render.
  setInterval(() => {
    for (const node of document.querySelectorAll('time[data-field="expires"]')) {
      node.textContent = fmtExpiry(node.getAttribute("datetime"));
    }
  }, 30_000);
  connect();
  document.documentElement.dataset.dashboardReady = "true";
}

start();
