// Compose: message, condition builder with the exact audience count, lifetime, offline
// notification with a preview, and Send behind a confirmation that repeats the count.
// Refusals are shown in words next to the field they concern.

import { inWords } from './api.js';
import { h, fmt, status } from './ui.js';

/** Which part of the form an error code is about. */
const FIELD_OF = {
  90002: 'message', 90007: 'message', 90010: 'message', 90005: 'send',
  90020: 'condition', 90022: 'condition', 90032: 'condition', 90033: 'condition', 90039: 'condition', 90040: 'condition',
  90026: 'lifetime', 90044: 'lifetime', 90043: 'offline',
  90024: 'send', 90045: 'send', 90047: 'send', 90048: 'send',
};

/** Timings the browser test reads: ms from a condition change to the count shown. */
window.__crierTimings = window.__crierTimings || [];

function list(text) {
  return text.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
}

export function composePage(main, api) {
  let attrNames = [];
  const errors = {};
  const errorBox = (name) => {
    errors[name] = h('div', { id: `${name}-error`, class: 'field-error', 'aria-live': 'assertive' });
    return errors[name];
  };

  // Message
  const text = h('textarea', { id: 'msg-text', rows: 3, 'aria-describedby': 'message-error' });
  const custom = h('textarea', { id: 'msg-custom', rows: 3, spellcheck: 'false', placeholder: '{"Data":"…","Desc":"…","Ext":"…"}', 'aria-describedby': 'message-error' });
  const message = h('fieldset', { class: 'card' }, h('legend', {}, 'Message'),
    h('label', { for: 'msg-text' }, 'Text'), text,
    h('label', { for: 'msg-custom' }, 'Custom element (MsgContent of a TIMCustomElem, as JSON; optional)'), custom,
    errorBox('message'));

  // Condition
  const kind = (value, label, checked) => h('label', { class: 'radio' },
    h('input', { type: 'radio', name: 'cond-kind', value, checked }), label);
  const tagsAnd = h('input', { id: 'tags-and', placeholder: 'tag1, tag2', autocomplete: 'off' });
  const tagsOr = h('input', { id: 'tags-or', placeholder: 'tag1, tag2', autocomplete: 'off' });
  const tagBox = h('div', { id: 'tag-box', hidden: true },
    h('label', { for: 'tags-and' }, 'Holding every one of these tags (TagsAnd, comma-separated)'), tagsAnd,
    h('label', { for: 'tags-or' }, 'Holding at least one of these tags (TagsOr, comma-separated)'), tagsOr,
    h('p', { class: 'help' }, 'Both lists together: accounts in both sets. At most 10 tags in each.'));
  const attrRows = { AttrsAnd: h('ul', { class: 'attr-rows', id: 'attrs-and' }), AttrsOr: h('ul', { class: 'attr-rows', id: 'attrs-or' }) };
  const addAttrRow = (which) => {
    const select = h('select', { 'aria-label': `${which} attribute` }, attrNames.map((n) => h('option', { value: n }, n)));
    const value = h('input', { 'aria-label': `${which} value`, autocomplete: 'off' });
    const remove = h('button', { type: 'button', 'aria-label': `Remove this ${which} pair` }, 'Remove');
    const row = h('li', {}, select, ' = ', value, remove);
    remove.addEventListener('click', () => { row.remove(); changed(); });
    attrRows[which].append(row);
    select.focus();
    changed();
  };
  const attrBox = h('div', { id: 'attr-box', hidden: true },
    h('h3', {}, 'Every pair matches (AttrsAnd)'), attrRows.AttrsAnd,
    h('button', { type: 'button', id: 'add-attr-and', onclick: () => addAttrRow('AttrsAnd') }, 'Add an AND pair'),
    h('h3', {}, 'At least one pair matches (AttrsOr)'), attrRows.AttrsOr,
    h('button', { type: 'button', id: 'add-attr-or', onclick: () => addAttrRow('AttrsOr') }, 'Add an OR pair'),
    h('p', { class: 'help', id: 'attr-names-help' }, ''));
  const count = h('output', { id: 'audience-count', 'aria-live': 'polite' }, '…');
  const connected = h('output', { id: 'audience-connected' }, '');
  const condition = h('fieldset', { class: 'card' }, h('legend', {}, 'Audience'),
    h('div', { role: 'radiogroup', 'aria-label': 'Who receives it' },
      kind('all', 'All users', true), kind('tags', 'By tags', false), kind('attrs', 'By attributes', false)),
    tagBox, attrBox, errorBox('condition'),
    h('p', { class: 'count' }, 'Audience now: ', count, ' accounts ', connected));

  // Lifetime
  const lifetime = h('input', { id: 'lifetime', type: 'number', min: 0, max: 604800, step: 1, value: 3600, 'aria-describedby': 'lifetime-help lifetime-error' });
  const life = h('fieldset', { class: 'card' }, h('legend', {}, 'Lifetime'),
    h('label', { for: 'lifetime' }, 'MsgLifeTime (seconds)'), lifetime,
    h('p', { class: 'help', id: 'lifetime-help' }, '0: only sessions online now get it. Otherwise accounts get it at their next login until they acknowledge it or it ends (at most 604800 s, 7 days).'),
    errorBox('lifetime'));

  // Offline push info
  const field = (id, label, attrs = {}) => [h('label', { for: id }, label), h('input', { id, autocomplete: 'off', ...attrs })];
  const noPush = h('input', { type: 'checkbox', id: 'opi-noflag' });
  const offline = h('fieldset', { class: 'card' }, h('legend', {}, 'Offline notification (OfflinePushInfo)'),
    h('label', { class: 'radio' }, noPush, 'Do not notify offline devices (PushFlag 1)'),
    field('opi-title', 'Title'), field('opi-desc', 'Text (Desc; default: the message text)'), field('opi-ext', 'Ext (passed to the device)'),
    h('details', {}, h('summary', {}, 'APNs'),
      field('apns-sound', 'Sound'), field('apns-subtitle', 'Subtitle'), field('apns-image', 'Image URL'),
      h('label', { for: 'apns-badge' }, 'Badge'),
      h('select', { id: 'apns-badge' }, h('option', { value: '0' }, 'count (0)'), h('option', { value: '1' }, 'do not change (1)')),
      h('label', { class: 'radio' }, h('input', { type: 'checkbox', id: 'apns-mutable' }), 'Mutable content')),
    h('details', {}, h('summary', {}, 'Android'),
      field('android-sound', 'Sound'), field('android-channel', 'Google channel id (GoogleChannelID)')),
    errorBox('offline'),
    h('div', { class: 'preview', id: 'preview', 'aria-label': 'Notification preview' }));

  // Send
  const send = h('button', { type: 'submit', class: 'primary', id: 'send' }, 'Send…');
  const result = h('div', { id: 'send-result', 'aria-live': 'polite' });
  const dialog = h('dialog', { id: 'confirm', 'aria-labelledby': 'confirm-title' });
  const form = h('form', { id: 'compose-form', class: 'compose', novalidate: true },
    message, condition, life, offline,
    h('div', { class: 'card send' }, send, errorBox('send'), result));
  main.append(form, dialog);

  const value = (id) => form.querySelector(`#${id}`).value.trim();
  const conditionKind = () => form.querySelector('input[name=cond-kind]:checked').value;

  function buildCondition() {
    const k = conditionKind();
    if (k === 'tags') {
      const c = {};
      if (list(tagsAnd.value).length) c.TagsAnd = list(tagsAnd.value);
      if (list(tagsOr.value).length) c.TagsOr = list(tagsOr.value);
      return Object.keys(c).length ? c : undefined;
    }
    if (k === 'attrs') {
      const c = {};
      for (const which of ['AttrsAnd', 'AttrsOr']) {
        const pairs = {};
        for (const row of attrRows[which].children) {
          const [select, input] = row.querySelectorAll('select, input');
          if (select.value) pairs[select.value] = input.value;
        }
        if (Object.keys(pairs).length) c[which] = pairs;
      }
      return Object.keys(c).length ? c : undefined;
    }
    return undefined;
  }

  function buildOfflinePushInfo() {
    const info = {};
    if (noPush.checked) info.PushFlag = 1;
    if (value('opi-title')) info.Title = value('opi-title');
    if (value('opi-desc')) info.Desc = value('opi-desc');
    if (value('opi-ext')) info.Ext = value('opi-ext');
    const apns = {};
    if (value('apns-sound')) apns.Sound = value('apns-sound');
    if (value('apns-subtitle')) apns.SubTitle = value('apns-subtitle');
    if (value('apns-image')) apns.Image = value('apns-image');
    if (value('apns-badge') === '1') apns.BadgeMode = 1;
    if (form.querySelector('#apns-mutable').checked) apns.MutableContent = 1;
    if (Object.keys(apns).length) info.ApnsInfo = apns;
    const android = {};
    if (value('android-sound')) android.Sound = value('android-sound');
    if (value('android-channel')) android.GoogleChannelID = value('android-channel');
    if (Object.keys(android).length) info.AndroidInfo = android;
    return Object.keys(info).length ? info : undefined;
  }

  function buildBody() {
    const body = [];
    if (text.value.trim()) body.push({ MsgType: 'TIMTextElem', MsgContent: { Text: text.value } });
    if (custom.value.trim()) {
      let content;
      try { content = JSON.parse(custom.value); } catch (e) { throw new FieldError('message', `The custom element is not valid JSON: ${e.message}`); }
      if (typeof content !== 'object' || Array.isArray(content) || content === null) throw new FieldError('message', 'The custom element must be a JSON object, e.g. {"Data":"…"}.');
      body.push({ MsgType: 'TIMCustomElem', MsgContent: content });
    }
    if (!body.length) throw new FieldError('message', 'Write a text or a custom element: a push needs a message.');
    return body;
  }

  function updatePreview() {
    const info = buildOfflinePushInfo() || {};
    let bodyText = text.value.trim();
    try { const c = JSON.parse(custom.value || 'null'); if (c && c.Desc) bodyText = `${bodyText}${c.Desc}`; } catch { /* shown on send */ }
    const preview = form.querySelector('#preview');
    if (info.PushFlag === 1) {
      preview.replaceChildren(h('p', { class: 'help' }, 'Offline devices are not notified.'));
      return;
    }
    preview.replaceChildren(h('p', { class: 'help' }, 'Preview on a device of an offline account:'),
      h('div', { class: 'notification' },
        h('div', { class: 'app' }, 'Your app · now'),
        h('strong', {}, info.Title || '(no title)'),
        info.ApnsInfo && info.ApnsInfo.SubTitle ? h('div', {}, info.ApnsInfo.SubTitle) : null,
        h('div', {}, info.Desc || bodyText || '(no text)')));
  }

  // The audience count follows the condition, newest request wins.
  let sequence = 0;
  let lastCount = null;
  let timer = null;
  function changed() {
    const started = performance.now();
    clearTimeout(timer);
    timer = setTimeout(() => refreshCount(started), 60);
  }
  async function refreshCount(started) {
    const mine = ++sequence;
    const cond = buildCondition();
    const body = cond ? { Condition: cond } : {};
    errors.condition.replaceChildren();
    try {
      const all = await api.call('crier/audience_count', body);
      if (mine !== sequence) return;
      lastCount = all.Count;
      count.textContent = fmt(all.Count);
      connected.textContent = `(${fmt(all.Connected)} online now)`;
      count.dataset.count = String(all.Count);
      window.__crierTimings.push({ what: 'audience_count', ms: performance.now() - started, condition: cond || null });
      window.dispatchEvent(new CustomEvent('crier-count', { detail: all.Count }));
    } catch (error) {
      if (mine !== sequence) return;
      // Past the 10 reads a second of v4/crier: try again once the second is over.
      if (error.code === 90024) {
        timer = setTimeout(() => refreshCount(started), 1000);
        return;
      }
      lastCount = null;
      count.textContent = '—';
      count.dataset.count = '';
      connected.textContent = '';
      errors.condition.replaceChildren(status(inWords(error), 'error'));
    }
  }

  form.addEventListener('input', (event) => {
    if (event.target.closest('#tag-box, #attr-box') || event.target.name === 'cond-kind') changed();
    updatePreview();
  });
  form.addEventListener('change', (event) => {
    if (event.target.name === 'cond-kind') {
      tagBox.hidden = conditionKind() !== 'tags';
      attrBox.hidden = conditionKind() !== 'attrs';
      if (conditionKind() === 'attrs' && !attrRows.AttrsAnd.children.length && !attrRows.AttrsOr.children.length && attrNames.length) addAttrRow('AttrsAnd');
      changed();
    } else if (event.target.closest('#attr-box')) changed();
    updatePreview();
  });

  class FieldError extends Error {
    constructor(fieldName, text) { super(text); this.fieldName = fieldName; }
  }

  function clearErrors() {
    // The last accepted push stays linked until the next one is accepted.
    for (const box of Object.values(errors)) box.replaceChildren();
  }

  function showError(error) {
    const fieldName = error instanceof FieldError ? error.fieldName : FIELD_OF[error.code] || 'send';
    const words = error instanceof FieldError ? error.message : inWords(error);
    errors[fieldName].replaceChildren(status(words, 'error'));
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    let request;
    try {
      request = { MsgRandom: Math.floor(Math.random() * 4294967295), MsgBody: buildBody() };
      const cond = buildCondition();
      if (cond) request.Condition = cond;
      const seconds = Number(lifetime.value);
      if (lifetime.value.trim() === '' || !Number.isInteger(seconds)) throw new FieldError('lifetime', 'The lifetime must be a whole number of seconds.');
      request.MsgLifeTime = seconds;
      const info = buildOfflinePushInfo();
      if (info) request.OfflinePushInfo = info;
    } catch (error) {
      showError(error);
      return;
    }
    const audience = lastCount === null ? 'an unknown number of' : fmt(lastCount);
    const cancel = h('button', { type: 'button', id: 'confirm-cancel' }, 'Cancel');
    const confirmSend = h('button', { type: 'button', class: 'primary', id: 'confirm-send' }, `Send to ${audience} accounts`);
    dialog.replaceChildren(h('h2', { id: 'confirm-title' }, 'Send this push?'),
      h('p', { id: 'confirm-count' }, `It goes to ${audience} accounts (the count now; the audience is fixed when the server accepts it).`),
      h('div', { class: 'buttons' }, cancel, confirmSend));
    cancel.addEventListener('click', () => dialog.close());
    confirmSend.addEventListener('click', async () => {
      dialog.close();
      send.disabled = true;
      try {
        const answer = await api.call('all_member_push/im_push', request);
        result.replaceChildren(status(h('span', {}, 'Accepted: task ', h('a', { id: 'sent-task', href: `#tasks/${encodeURIComponent(answer.TaskId)}` }, answer.TaskId), '.')));
        refreshCount(performance.now());
      } catch (error) {
        showError(error);
      } finally {
        send.disabled = false;
      }
    });
    dialog.showModal();
    confirmSend.focus();
  });

  api.call('all_member_push/im_get_attr_name', {}).then((answer) => {
    attrNames = Object.values(answer.AttrNames || {});
    form.querySelector('#attr-names-help').textContent = attrNames.length
      ? `The app's attributes: ${attrNames.join(', ')}.`
      : 'This app has no attribute names yet: set them on the Tags and attributes page.';
    main.dataset.loaded = 'compose';
    window.dispatchEvent(new CustomEvent('crier-loaded', { detail: 'compose' }));
  }).catch((error) => errors.condition.replaceChildren(status(inWords(error), 'error')));
  refreshCount(performance.now());
  updatePreview();
  return () => clearTimeout(timer);
}
