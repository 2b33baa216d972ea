// Overview, Tasks, Accounts, and Tags and attributes. Each page reads through the signed API
// and redraws its regions; pages that refresh themselves answer a cleanup that stops them.

import { inWords } from './api.js';
import { h, fmt, fmtTime, fmtDuration, status, lineChart, bars } from './ui.js';

const COLORS = {
  online: '#1f6feb', offline: '#8250df', acked: '#1a7f37', sent: '#bf8700', failed: '#cf222e',
};
const PROVIDERS = ['apns', 'fcm', 'webhook'];

/** Marks the page as loaded for the browser test's timings. */
function loaded(main, what) {
  main.dataset.loaded = what;
  window.dispatchEvent(new CustomEvent('crier-loaded', { detail: what }));
}

function timeLabel(seconds) {
  return new Date(seconds * 1000).toISOString().slice(11, 16);
}

// ---------------------------------------------------------------- Overview

export function overviewPage(main, api) {
  const quota = h('section', { class: 'card', 'aria-labelledby': 'quota-title' }, h('h2', { id: 'quota-title' }, 'Pushes today'));
  const sessions = h('section', { class: 'card', 'aria-labelledby': 'sessions-title' }, h('h2', { id: 'sessions-title' }, 'Sessions online'));
  const chart = h('section', { class: 'card wide', 'aria-labelledby': 'chart-title' }, h('h2', { id: 'chart-title' }, 'Last hour'));
  const note = h('p', { class: 'help' }, 'Refreshes every 5 seconds.');
  main.append(note, h('div', { class: 'grid' }, quota, sessions, chart));

  async function refresh() {
    try {
      const [q, o] = await Promise.all([api.call('crier/quota'), api.call('crier/overview')]);
      const now = q.ServerTime;
      const next = q.NextPushTime <= now ? 'now' : `${fmtTime(q.NextPushTime, true)} (in ${Math.ceil((q.NextPushTime - now) / 1000)} s)`;
      quota.replaceChildren(h('h2', { id: 'quota-title' }, 'Pushes today'),
        h('p', { class: 'big' }, h('span', { id: 'pushes-today' }, fmt(q.PushesToday)), ` of ${fmt(q.DailyPushQuota)}`),
        h('progress', { max: q.DailyPushQuota, value: Math.min(q.PushesToday, q.DailyPushQuota), 'aria-label': 'Daily quota used' }),
        h('dl', {},
          h('dt', {}, 'Next push allowed'), h('dd', { id: 'next-push' }, q.PushEnabled ? next : 'never: pushing is disabled for this app'),
          h('dt', {}, 'Minimum interval'), h('dd', {}, `${fmt(q.MinPushIntervalMs)} ms`),
          h('dt', {}, 'Last push'), h('dd', {}, q.LastPushTime ? fmtTime(q.LastPushTime, true) : 'none yet'),
          h('dt', {}, 'Quota resets'), h('dd', {}, fmtTime(q.QuotaResetTime))));
      const platforms = Object.entries(o.SessionsByPlatform);
      sessions.replaceChildren(h('h2', { id: 'sessions-title' }, 'Sessions online'),
        h('p', { class: 'big', id: 'sessions-total' }, fmt(o.Sessions)),
        platforms.length
          ? h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Platform'), h('th', { scope: 'col', class: 'num' }, 'Sessions'))),
            h('tbody', { id: 'sessions-by-platform' }, platforms.map(([p, n]) => h('tr', {}, h('th', { scope: 'row' }, p), h('td', { class: 'num' }, fmt(n))))))
          : h('p', {}, 'No session is open.'),
        h('p', { class: 'help' }, `${fmt(o.AccountsOnline)} accounts online of ${fmt(o.LiveAccounts)}; ${fmt(o.Devices)} devices registered.`));
      const labels = o.History.map((p) => timeLabel(p.Time));
      const sum = (p, key) => PROVIDERS.reduce((a, name) => a + ((p.Notifications[name] || {})[key] || 0), 0);
      const byProvider = PROVIDERS.map((name) => {
        const sent = o.History.reduce((a, p) => a + ((p.Notifications[name] || {}).Sent || 0), 0);
        const failed = o.History.reduce((a, p) => a + ((p.Notifications[name] || {}).Failed || 0), 0);
        return h('tr', {}, h('th', { scope: 'row' }, name), h('td', { class: 'num' }, fmt(sent)), h('td', { class: 'num' }, fmt(failed)));
      });
      chart.replaceChildren(h('h2', { id: 'chart-title' }, 'Last hour'),
        lineChart('Deliveries and notifications per minute, last 60 minutes (UTC)', labels, [
          { name: 'Delivered online', color: COLORS.online, values: o.History.map((p) => p.DeliveredOnline) },
          { name: 'Delivered offline', color: COLORS.offline, values: o.History.map((p) => p.DeliveredOffline) },
          { name: 'Acknowledged', color: COLORS.acked, values: o.History.map((p) => p.Acknowledged) },
          { name: 'Notifications sent', color: COLORS.sent, values: o.History.map((p) => sum(p, 'Sent')) },
          { name: 'Notifications failed', color: COLORS.failed, values: o.History.map((p) => sum(p, 'Failed')) },
        ]),
        h('table', { class: 'compact' }, h('caption', {}, 'Notifications in the last hour, by provider'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Provider'), h('th', { scope: 'col', class: 'num' }, 'Sent'), h('th', { scope: 'col', class: 'num' }, 'Failed'))),
          h('tbody', {}, byProvider)));
      loaded(main, 'overview');
    } catch (error) {
      note.replaceChildren(status(inWords(error), 'error'));
    }
  }
  refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- Tasks

function messageText(body) {
  if (!Array.isArray(body)) return '';
  return body.map((e) => (e.MsgType === 'TIMTextElem' ? e.MsgContent.Text : e.MsgType === 'TIMCustomElem' ? (e.MsgContent.Desc || '[custom]') : `[${e.MsgType}]`)).join(' ');
}

function conditionText(condition) {
  if (!condition) return 'all users';
  const parts = [];
  if (condition.TagsAnd) parts.push(`tags all of ${condition.TagsAnd.join(', ')}`);
  if (condition.TagsOr) parts.push(`tags any of ${condition.TagsOr.join(', ')}`);
  if (condition.AttrsAnd) parts.push(`attrs all of ${Object.entries(condition.AttrsAnd).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  if (condition.AttrsOr) parts.push(`attrs any of ${Object.entries(condition.AttrsOr).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  return parts.join('; ') || JSON.stringify(condition);
}

export function tasksPage(main, api, taskId) {
  const list = h('section', { class: 'card wide', 'aria-labelledby': 'list-title' }, h('h2', { id: 'list-title' }, 'Recent pushes'));
  const detail = h('section', { class: 'card wide', id: 'task-detail', 'aria-labelledby': 'detail-title', 'aria-live': 'polite' });
  main.append(taskId ? detail : null, list);

  async function refreshList() {
    try {
      const answer = await api.call('crier/task_list', { Want: 50 });
      list.replaceChildren(h('h2', { id: 'list-title' }, `Recent pushes (${fmt(answer.Total)})`),
        answer.Tasks.length === 0 ? h('p', {}, 'No push in the last 8 days.') :
          h('table', { id: 'task-table' },
            h('thead', {}, h('tr', {}, ['Task', 'Accepted', 'State', 'Audience', 'Acknowledged', 'Lifetime', 'Condition', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, answer.Tasks.map((t) => h('tr', { 'data-task': t.TaskId },
              h('td', {}, h('a', { href: `#tasks/${encodeURIComponent(t.TaskId)}` }, t.TaskId)),
              h('td', {}, fmtTime(t.TaskTime)),
              h('td', {}, h('span', { class: `state ${t.State}` }, t.State)),
              h('td', { class: 'num' }, fmt(t.AudienceSize)),
              h('td', { class: 'num' }, fmt(t.Acked)),
              h('td', {}, fmtDuration(t.MsgLifeTime)),
              h('td', {}, conditionText(t.Condition)),
              h('td', { class: 'message' }, messageText(t.MsgBody)))))));
      if (!taskId) loaded(main, 'tasks');
    } catch (error) {
      list.replaceChildren(h('h2', { id: 'list-title' }, 'Recent pushes'), status(inWords(error), 'error'));
    }
  }

  async function refreshDetail() {
    try {
      const [{ Report: r }, { Points: points }] = await Promise.all([
        api.call('crier/task_report', { TaskId: taskId }),
        api.call('crier/task_timeline', { TaskId: taskId }),
      ]);
      const providers = Object.entries(r.Notifications.Providers || {});
      const rows = [
        { label: 'Audience', value: r.AudienceSize },
        { label: 'Delivered online', value: r.DeliveredOnline, kind: 'online' },
        { label: 'Delivered offline (on login)', value: r.DeliveredOffline, kind: 'offline' },
        { label: 'Acknowledged', value: r.Acknowledged ?? 0, kind: 'acked' },
        ...providers.flatMap(([name, c]) => [
          { label: `Notifications sent (${name})`, value: c.Sent, kind: 'sent' },
          { label: `Notifications failed (${name})`, value: c.Failed + (c.DeadTokens || 0), kind: 'failed' },
        ]),
      ];
      detail.replaceChildren(h('h2', { id: 'detail-title' }, `Task ${taskId}`),
        h('p', {}, `Accepted ${fmtTime(r.CreatedAt)}; lifetime ${fmtDuration(r.MsgLifeTime)}; notifications: ${r.Notifications.State === 'None' ? 'none to send' : `${fmt(r.Notifications.Targets)} offline devices' accounts, ${r.Notifications.State.toLowerCase()}`}.`),
        h('dl', { class: 'inline', id: 'task-funnel-numbers' },
          h('dt', {}, 'Audience'), h('dd', { id: 'f-audience' }, fmt(r.AudienceSize)),
          h('dt', {}, 'Delivered online'), h('dd', { id: 'f-online' }, fmt(r.DeliveredOnline)),
          h('dt', {}, 'Delivered offline'), h('dd', { id: 'f-offline' }, fmt(r.DeliveredOffline)),
          h('dt', {}, 'Acknowledged'), h('dd', { id: 'f-acked' }, r.Acknowledged === undefined ? 'not kept' : fmt(r.Acknowledged))),
        bars('Funnel', rows, r.AudienceSize),
        points.length
          ? lineChart('Over time (counters at each sample, UTC)', points.map((p) => new Date(p.Time * 1000).toISOString().slice(11, 19)), [
            { name: 'Delivered online', color: COLORS.online, values: points.map((p) => p.DeliveredOnline) },
            { name: 'Delivered offline', color: COLORS.offline, values: points.map((p) => p.DeliveredOffline) },
            { name: 'Acknowledged', color: COLORS.acked, values: points.map((p) => p.Acknowledged) },
          ], { cumulative: true })
          : h('p', {}, 'No samples over time yet.'),
        h('p', {}, h('a', { href: '#tasks' }, 'Back to all tasks')));
      loaded(main, 'task');
    } catch (error) {
      detail.replaceChildren(h('h2', { id: 'detail-title' }, `Task ${taskId}`), status(inWords(error), 'error'));
    }
  }
  refreshList();
  if (taskId) refreshDetail();
  const timer = setInterval(() => {
    refreshList();
    if (taskId) refreshDetail();
  }, 3000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------- Accounts

export function accountsPage(main, api, wanted) {
  const result = h('section', { class: 'card wide', id: 'account-result', 'aria-live': 'polite' });
  const lookup = h('form', { class: 'card inline-form', role: 'search', 'aria-label': 'Look up an account' },
    h('label', { for: 'lookup-id' }, 'Identifier'),
    h('input', { id: 'lookup-id', name: 'id', required: true, value: wanted || '', autocomplete: 'off' }),
    h('button', { type: 'submit', class: 'primary' }, 'Look up'));
  const manage = h('form', { class: 'card inline-form', 'aria-label': 'Import an account' },
    h('label', { for: 'import-id' }, 'Import account'),
    h('input', { id: 'import-id', name: 'id', required: true, autocomplete: 'off' }),
    h('button', { type: 'submit' }, 'Import'),
    h('span', { id: 'import-status', 'aria-live': 'polite' }));
  main.append(h('div', { class: 'grid' }, lookup, manage), result);

  lookup.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#accounts/${encodeURIComponent(lookup.id.value.trim())}`;
  });
  manage.addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = manage.id.value.trim();
    const box = manage.querySelector('#import-status');
    try {
      await api.call('im_open_login_svc/account_import', { UserID: id });
      box.replaceChildren(status(`${id} imported.`));
    } catch (error) {
      box.replaceChildren(status(inWords(error), 'error'));
    }
  });

  async function show(id) {
    result.replaceChildren(status(`Looking up ${id}…`));
    try {
      const a = await api.call('crier/account_info', { UserID: id });
      const remove = h('button', { type: 'button', class: 'danger' }, `Delete ${id}`);
      remove.addEventListener('click', async () => {
        if (!confirm(`Delete account ${id}? It leaves every audience, loses its pending pushes and its sessions are closed.`)) return;
        try {
          const answer = await api.call('im_open_login_svc/account_delete', { DeleteItem: [{ UserID: id }] });
          const item = answer.ResultItem[0];
          result.replaceChildren(status(item.ResultCode === 0 ? `${id} deleted.` : `${id} not deleted: ${item.ResultInfo}`, item.ResultCode === 0 ? 'info' : 'error'));
        } catch (error) {
          result.replaceChildren(status(inWords(error), 'error'));
        }
      });
      const attrs = Object.entries(a.Attrs);
      result.replaceChildren(h('h2', {}, a.UserID),
        h('dl', { class: 'inline' },
          h('dt', {}, 'Status'), h('dd', { id: 'account-status' }, a.AccountStatus === 'Imported' ? 'imported (receives pushes)' : 'not imported (tags and attributes kept; joins audiences once imported)'),
          h('dt', {}, 'Pushes pending'), h('dd', { id: 'account-pending' }, fmt(a.PendingPushes))),
        h('h3', {}, 'Tags'),
        a.Tags.length ? h('ul', { class: 'chips', id: 'account-tags' }, a.Tags.map((t) => h('li', {}, t))) : h('p', { id: 'account-tags' }, 'No tags.'),
        h('h3', {}, 'Attributes'),
        attrs.length ? h('table', { id: 'account-attrs' }, h('tbody', {}, attrs.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v))))) : h('p', {}, 'No attributes.'),
        h('h3', {}, 'Sessions online'),
        a.Sessions.length ? h('ul', { id: 'account-sessions' }, a.Sessions.map((s) => h('li', {}, s.Platform))) : h('p', { id: 'account-sessions' }, 'Offline.'),
        h('h3', {}, 'Registered devices'),
        a.Devices.length ? h('ul', { id: 'account-devices' }, a.Devices.map((d) => h('li', {}, `${d.Platform}: `, h('code', {}, d.Token)))) : h('p', {}, 'None.'),
        h('p', {}, remove));
      loaded(main, 'account');
    } catch (error) {
      result.replaceChildren(status(inWords(error), 'error'));
      loaded(main, 'account');
    }
  }
  if (wanted) show(wanted);
  else loaded(main, 'accounts');
}

// ---------------------------------------------------------------- Tags and attributes

export function tagsPage(main, api) {
  const names = h('form', { class: 'card', 'aria-labelledby': 'names-title' }, h('h2', { id: 'names-title' }, 'Attribute names'));
  const tags = h('section', { class: 'card', 'aria-labelledby': 'tags-title' }, h('h2', { id: 'tags-title' }, 'Most used tags'));
  const values = h('section', { class: 'card', 'aria-labelledby': 'values-title' }, h('h2', { id: 'values-title' }, 'Values of an attribute'));
  main.append(h('div', { class: 'grid' }, names, tags, values));
  let attrNames = {};

  async function loadNames() {
    const answer = await api.call('all_member_push/im_get_attr_name', {});
    attrNames = answer.AttrNames || {};
    const inputs = [];
    for (let slot = 0; slot < 10; slot++) {
      inputs.push(h('label', { for: `slot-${slot}` }, `Slot ${slot}`),
        h('input', { id: `slot-${slot}`, name: `slot-${slot}`, value: attrNames[slot] || '', maxlength: 50, placeholder: 'unset' }));
    }
    const box = h('div', { id: 'names-status', 'aria-live': 'polite' });
    names.replaceChildren(h('h2', { id: 'names-title' }, 'Attribute names'),
      h('p', { class: 'help' }, 'Renaming a slot keeps its values under the new name. A slot cannot be unset.'),
      h('div', { class: 'slots' }, inputs), box, h('button', { type: 'submit', class: 'primary' }, 'Save names'));
    const select = h('select', { id: 'attr-select', 'aria-label': 'Attribute' },
      Object.values(attrNames).map((n) => h('option', { value: n }, n)));
    select.addEventListener('change', () => loadValues(select.value));
    values.replaceChildren(h('h2', { id: 'values-title' }, 'Values of an attribute'),
      Object.keys(attrNames).length ? h('label', {}, 'Attribute ', select) : h('p', {}, 'No attribute names yet.'),
      h('div', { id: 'values-table' }));
    if (select.value) await loadValues(select.value);
  }

  names.addEventListener('submit', async (event) => {
    event.preventDefault();
    const wanted = {};
    for (let slot = 0; slot < 10; slot++) {
      const value = names[`slot-${slot}`].value.trim();
      if (value && value !== attrNames[slot]) wanted[slot] = value;
    }
    const box = names.querySelector('#names-status');
    if (!Object.keys(wanted).length) { box.replaceChildren(status('Nothing changed.')); return; }
    try {
      await api.call('all_member_push/im_set_attr_name', { AttrNames: wanted });
      await loadNames();
      names.querySelector('#names-status').replaceChildren(status('Saved.'));
    } catch (error) {
      box.replaceChildren(status(inWords(error), 'error'));
    }
  });

  async function loadValues(name) {
    const target = values.querySelector('#values-table');
    try {
      const answer = await api.call('crier/attr_stats', { AttrName: name, Want: 20 });
      target.replaceChildren(bars(`${fmt(answer.ValueCount)} values of ${name}; the 20 most held, by live accounts`,
        answer.Values.map((v) => ({ label: v.Value, value: v.Count }))));
    } catch (error) {
      target.replaceChildren(status(inWords(error), 'error'));
    }
  }

  async function loadTags() {
    const answer = await api.call('crier/tag_stats', { Want: 20 });
    tags.replaceChildren(h('h2', { id: 'tags-title' }, 'Most used tags'),
      answer.Tags.length
        ? bars(`${fmt(answer.TagCount)} tags held; the 20 most held, by live accounts`, answer.Tags.map((t) => ({ label: t.Tag, value: t.Count })))
        : h('p', {}, 'No tags yet.'));
  }

  Promise.all([loadNames(), loadTags()])
    .then(() => loaded(main, 'tags'))
    .catch((error) => main.append(status(inWords(error), 'error')));
}
