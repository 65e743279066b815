// UI strings (English, Arabic) and the language switch.
//
// Static text in the pages carries data-i18n="key" (textContent),
// data-i18n-placeholder, data-i18n-label (aria-label) or data-i18n-title.
// Dynamic text calls t(key, vars). `{name}` placeholders are replaced.

const STRINGS = {
  en: {
    'lang.label': 'Language',
    'brand': 'LiveCore',
    'conn.connecting': 'connecting',
    'conn.live': 'live',
    'conn.reconnecting': 'reconnecting',
    'conn.closed': 'offline',
    'show.scheduled': 'Scheduled',
    'show.live': 'On air',
    'show.ended': 'Ended',
    'login.title': 'Join a show',
    'login.show': 'Show ID',
    'login.token': 'Access token',
    'login.token_hint': 'Viewers can leave this empty to join as a guest.',
    'login.submit': 'Join',
    'fatal.4401': 'Your access token is invalid or has expired.',
    'fatal.4403': 'This token is not allowed on this page or for this show.',
    'fatal.4404': 'This show does not exist.',
    'fatal.other': 'The server closed the connection ({code}).',
    'viewers.label': 'viewers',
    'you.label': 'You are',

    'video.label': 'Live video',
    'video.unmute': 'Unmute',
    'video.mute': 'Mute',
    'video.waiting': 'Waiting for the host’s camera…',
    'video.ended': 'This show has ended. Thanks for watching!',
    'chat.title': 'Live chat',
    'chat.list': 'Chat messages',
    'chat.input': 'Chat message',
    'chat.placeholder': 'Say something…',
    'chat.send': 'Send',
    'chat.readonly': 'You are watching without an account: chat and buying are off.',
    'chat.held': 'Your message is waiting for a moderator.',
    'chat.pinned': 'Pinned message',
    'reactions.label': 'Reactions',
    'reactions.send': 'React with {emoji}',
    'announcement.label': 'Announcement',
    'pinned.title': 'Featured product',
    'pinned.image': 'Product image',
    'deal.title': 'Flash deal',
    'deal.ends_in': 'Ends in',
    'deal.seconds': 's',
    'deal.left': 'Left',
    'deal.of': 'of',
    'deal.buy': 'Buy now',
    'deal.reserving': 'Reserving…',
    'deal.reserved': 'Reserved',
    'deal.sold_out': 'Sold out',
    'deal.limit_reached': 'Limit reached',
    'deal.expired': 'Deal ended',
    'deal.cancelled': 'Deal cancelled',
    'deal.login_to_buy': 'Join with an account to buy',
    'confirm.title': 'Complete your order',
    'confirm.hold': 'Held for you for',
    'confirm.payment_ref': 'Payment reference',
    'confirm.button': 'Pay and confirm',
    'confirm.confirming': 'Confirming…',
    'confirm.release': 'Release',
    'order.title': 'Order confirmed',
    'order.id': 'Order',
    'order.total': 'Total',
    'hold.expired': 'Your hold expired before payment.',
    'notice.muted': 'A moderator muted you until {time}.',
    'notice.muted_forever': 'A moderator muted you.',
    'notice.banned': 'You are banned from this show’s chat.',
    'notice.other': 'A moderator restricted your chat ({action}).',

    'host.title': 'Host studio',
    'host.show': 'Show',
    'host.start': 'Start show',
    'host.end': 'End show',
    'host.camera': 'Camera',
    'host.preview': 'Camera preview',
    'publish.start': 'Go live with camera',
    'publish.stop': 'Stop camera',
    'publish.off': 'Camera off',
    'publish.connecting': 'Connecting…',
    'publish.live': 'Publishing',
    'publish.failed': 'Camera stream failed: {error}',
    'publish.retrying': 'Connection lost: reconnecting the camera…',
    'publish.insecure': 'The camera needs HTTPS (or localhost).',
    'products.title': 'Products',
    'products.pin': 'Pin',
    'products.pinned': 'Pinned',
    'products.pin_label': 'Pin {name}',
    'products.unpin': 'Unpin product',
    'products.stock': 'Stock: {n}',
    'products.empty': 'No products yet.',
    'products.reload': 'Reload',
    'dealform.title': 'Launch a flash deal',
    'dealform.product': 'Product',
    'dealform.price': 'Deal price',
    'dealform.quantity': 'Quantity',
    'dealform.duration': 'Duration (seconds)',
    'dealform.limit': 'Per-user limit',
    'dealform.launch': 'Launch deal',
    'dealform.bad_price': 'Enter a valid price.',
    'deal.cancel': 'Cancel deal',
    'deal.current': 'Current deal',
    'deal.none': 'No deal running.',
    'announce.title': 'Announcement',
    'announce.input': 'Announcement text',
    'announce.send': 'Announce',
    'stats.title': 'Live stats',
    'stats.viewers': 'Viewers',
    'stats.peak': 'Peak viewers',
    'stats.chat': 'Chat / min',
    'stats.reactions': 'Reactions / min',
    'stats.claims': 'Claims',
    'stats.orders': 'Orders',
    'stats.gmv': 'Sales',
    'stats.chart': 'Chart of viewers and chat messages per minute over the last two minutes',
    'stats.legend_viewers': 'viewers',
    'stats.legend_chat': 'chat/min',
    'done.show.start': 'Show started.',
    'done.show.end': 'Show ended.',
    'done.product.pin': 'Product pinned.',
    'done.product.unpin': 'Product unpinned.',
    'done.deal.launch': 'Deal launched.',
    'done.deal.cancel': 'Deal cancelled.',
    'done.announce': 'Announcement sent.',

    'mod.title': 'Moderation',
    'mod.delete': 'Delete',
    'mod.pin': 'Pin',
    'mod.timeout': 'Timeout 60 s',
    'mod.ban': 'Ban',
    'mod.unban': 'Unban',
    'mod.approve': 'Approve',
    'mod.reject': 'Reject',
    'mod.unpin': 'Unpin message',
    'mod.action_label': '{action}: message from {name}',
    'mod.user_label': '{action}: {name}',
    'flagged.title': 'Held for review',
    'flagged.reason': 'Reason: {reason}',
    'slow.label': 'Slow mode (seconds between messages, 0 = off)',
    'slow.set': 'Set slow mode',
    'filter.label': 'Blocked words (comma separated)',
    'filter.set': 'Save word filter',
    'unban.label': 'User ID to unban',
    'banned.title': 'Banned users',
    'audit.title': 'Audit log',
    'audit.more': 'Load more entries',
    'done.chat.delete': 'Message deleted.',
    'done.chat.pin': 'Message pinned.',
    'done.chat.unpin': 'Message unpinned.',
    'done.user.timeout': 'User timed out for 60 s.',
    'done.user.ban': 'User banned.',
    'done.user.unban': 'User unbanned.',
    'done.chat.approve': 'Message approved.',
    'done.chat.reject': 'Message rejected.',
    'done.chat.slow_mode': 'Slow mode saved.',
    'done.chat.filter': 'Word filter saved.',

    'err.generic': 'Something went wrong ({code}).',
    'err.unauthenticated': 'Join with an account first.',
    'err.forbidden': 'You are not allowed to do that.',
    'err.not_found': 'Not found.',
    'err.bad_request': 'The server did not understand that request.',
    'err.validation_error': 'Please check the values you entered.',
    'err.muted': 'You are muted.',
    'err.banned': 'You are banned from this chat.',
    'err.slow_mode': 'Slow mode is on: please wait before sending again.',
    'err.slow_mode_wait': 'Slow mode is on: wait {seconds} s.',
    'err.rate_limited': 'Too many requests: slow down a little.',
    'err.rate_limited_wait': 'Too many requests: try again in {seconds} s.',
    'err.too_long': 'That message is too long (500 characters at most).',
    'err.sold_out': 'Sold out.',
    'err.deal_not_live': 'This deal is no longer running.',
    'err.limit_reached': 'You already have the maximum for this deal.',
    'err.reservation_expired': 'Your hold expired before payment.',
    'err.reservation_not_active': 'This reservation is no longer active.',
    'err.insufficient_stock': 'Not enough stock for that quantity.',
    'err.deal_already_live': 'Another deal is already running.',
    'err.show_ended': 'The show has ended.',
    'err.idempotency_mismatch': 'Request conflict: please try again.',
    'err.unavailable': 'The service is busy: please retry shortly.',
    'err.not_connected': 'Not connected: waiting to reconnect.',
    'err.disconnected': 'The connection dropped: please retry.',
    'err.timeout': 'The server did not answer in time.',
    'err.network': 'Network error: please retry.',
    'err.internal': 'Server error: please retry.',
  },

  ar: {
    'lang.label': 'اللغة',
    'brand': 'LiveCore',
    'conn.connecting': 'جارٍ الاتصال',
    'conn.live': 'متصل',
    'conn.reconnecting': 'إعادة الاتصال',
    'conn.closed': 'غير متصل',
    'show.scheduled': 'مجدول',
    'show.live': 'على الهواء',
    'show.ended': 'انتهى',
    'login.title': 'الانضمام إلى عرض',
    'login.show': 'معرّف العرض',
    'login.token': 'رمز الدخول',
    'login.token_hint': 'يمكن للمشاهدين ترك هذا الحقل فارغًا للانضمام كضيف.',
    'login.submit': 'انضمام',
    'fatal.4401': 'رمز الدخول غير صالح أو منتهي الصلاحية.',
    'fatal.4403': 'هذا الرمز غير مسموح به في هذه الصفحة أو لهذا العرض.',
    'fatal.4404': 'هذا العرض غير موجود.',
    'fatal.other': 'أغلق الخادم الاتصال ({code}).',
    'viewers.label': 'مشاهد',
    'you.label': 'أنت',

    'video.label': 'البث المباشر',
    'video.unmute': 'تشغيل الصوت',
    'video.mute': 'كتم الصوت',
    'video.waiting': 'بانتظار كاميرا المقدّم…',
    'video.ended': 'انتهى العرض. شكرًا للمشاهدة!',
    'chat.title': 'الدردشة المباشرة',
    'chat.list': 'رسائل الدردشة',
    'chat.input': 'رسالة الدردشة',
    'chat.placeholder': 'اكتب شيئًا…',
    'chat.send': 'إرسال',
    'chat.readonly': 'أنت تشاهد بدون حساب: الدردشة والشراء غير متاحين.',
    'chat.held': 'رسالتك بانتظار مراجعة المشرف.',
    'chat.pinned': 'رسالة مثبّتة',
    'reactions.label': 'التفاعلات',
    'reactions.send': 'تفاعل بـ {emoji}',
    'announcement.label': 'إعلان',
    'pinned.title': 'المنتج المميّز',
    'pinned.image': 'صورة المنتج',
    'deal.title': 'عرض سريع',
    'deal.ends_in': 'ينتهي خلال',
    'deal.seconds': 'ث',
    'deal.left': 'المتبقي',
    'deal.of': 'من',
    'deal.buy': 'اشترِ الآن',
    'deal.reserving': 'جارٍ الحجز…',
    'deal.reserved': 'محجوز',
    'deal.sold_out': 'نفدت الكمية',
    'deal.limit_reached': 'بلغت الحد الأقصى',
    'deal.expired': 'انتهى العرض',
    'deal.cancelled': 'أُلغي العرض',
    'deal.login_to_buy': 'انضم بحساب لتتمكن من الشراء',
    'confirm.title': 'أكمل طلبك',
    'confirm.hold': 'محجوز لك لمدة',
    'confirm.payment_ref': 'مرجع الدفع',
    'confirm.button': 'ادفع وأكّد',
    'confirm.confirming': 'جارٍ التأكيد…',
    'confirm.release': 'إلغاء الحجز',
    'order.title': 'تم تأكيد الطلب',
    'order.id': 'الطلب',
    'order.total': 'الإجمالي',
    'hold.expired': 'انتهت مدة الحجز قبل الدفع.',
    'notice.muted': 'كتمك أحد المشرفين حتى {time}.',
    'notice.muted_forever': 'كتمك أحد المشرفين.',
    'notice.banned': 'أنت محظور من دردشة هذا العرض.',
    'notice.other': 'قيّد أحد المشرفين مشاركتك في الدردشة ({action}).',

    'host.title': 'استوديو المقدّم',
    'host.show': 'العرض',
    'host.start': 'بدء العرض',
    'host.end': 'إنهاء العرض',
    'host.camera': 'الكاميرا',
    'host.preview': 'معاينة الكاميرا',
    'publish.start': 'البث بالكاميرا',
    'publish.stop': 'إيقاف الكاميرا',
    'publish.off': 'الكاميرا متوقفة',
    'publish.connecting': 'جارٍ الاتصال…',
    'publish.live': 'يتم البث',
    'publish.failed': 'فشل بث الكاميرا: {error}',
    'publish.retrying': 'انقطع الاتصال: جارٍ إعادة توصيل الكاميرا…',
    'publish.insecure': 'تحتاج الكاميرا إلى HTTPS (أو localhost).',
    'products.title': 'المنتجات',
    'products.pin': 'تثبيت',
    'products.pinned': 'مثبّت',
    'products.pin_label': 'تثبيت {name}',
    'products.unpin': 'إلغاء تثبيت المنتج',
    'products.stock': 'المخزون: {n}',
    'products.empty': 'لا توجد منتجات بعد.',
    'products.reload': 'تحديث',
    'dealform.title': 'إطلاق عرض سريع',
    'dealform.product': 'المنتج',
    'dealform.price': 'سعر العرض',
    'dealform.quantity': 'الكمية',
    'dealform.duration': 'المدة (بالثواني)',
    'dealform.limit': 'الحد لكل مستخدم',
    'dealform.launch': 'إطلاق العرض',
    'dealform.bad_price': 'أدخل سعرًا صحيحًا.',
    'deal.cancel': 'إلغاء العرض',
    'deal.current': 'العرض الحالي',
    'deal.none': 'لا يوجد عرض جارٍ.',
    'announce.title': 'إعلان',
    'announce.input': 'نص الإعلان',
    'announce.send': 'أعلن',
    'stats.title': 'إحصاءات مباشرة',
    'stats.viewers': 'المشاهدون',
    'stats.peak': 'ذروة المشاهدين',
    'stats.chat': 'رسائل / دقيقة',
    'stats.reactions': 'تفاعلات / دقيقة',
    'stats.claims': 'الحجوزات',
    'stats.orders': 'الطلبات',
    'stats.gmv': 'المبيعات',
    'stats.chart': 'رسم بياني للمشاهدين ورسائل الدردشة في الدقيقة خلال آخر دقيقتين',
    'stats.legend_viewers': 'المشاهدون',
    'stats.legend_chat': 'رسائل/دقيقة',
    'done.show.start': 'بدأ العرض.',
    'done.show.end': 'انتهى العرض.',
    'done.product.pin': 'تم تثبيت المنتج.',
    'done.product.unpin': 'تم إلغاء تثبيت المنتج.',
    'done.deal.launch': 'تم إطلاق العرض.',
    'done.deal.cancel': 'تم إلغاء العرض.',
    'done.announce': 'تم إرسال الإعلان.',

    'mod.title': 'الإشراف',
    'mod.delete': 'حذف',
    'mod.pin': 'تثبيت',
    'mod.timeout': 'إيقاف 60 ث',
    'mod.ban': 'حظر',
    'mod.unban': 'إلغاء الحظر',
    'mod.approve': 'قبول',
    'mod.reject': 'رفض',
    'mod.unpin': 'إلغاء تثبيت الرسالة',
    'mod.action_label': '{action}: رسالة من {name}',
    'mod.user_label': '{action}: {name}',
    'flagged.title': 'بانتظار المراجعة',
    'flagged.reason': 'السبب: {reason}',
    'slow.label': 'الوضع البطيء (ثوانٍ بين الرسائل، 0 = إيقاف)',
    'slow.set': 'تعيين الوضع البطيء',
    'filter.label': 'كلمات محظورة (مفصولة بفواصل)',
    'filter.set': 'حفظ مرشّح الكلمات',
    'unban.label': 'معرّف المستخدم لإلغاء حظره',
    'banned.title': 'المستخدمون المحظورون',
    'audit.title': 'سجل التدقيق',
    'audit.more': 'تحميل المزيد من الإدخالات',
    'done.chat.delete': 'تم حذف الرسالة.',
    'done.chat.pin': 'تم تثبيت الرسالة.',
    'done.chat.unpin': 'تم إلغاء تثبيت الرسالة.',
    'done.user.timeout': 'تم إيقاف المستخدم لمدة 60 ثانية.',
    'done.user.ban': 'تم حظر المستخدم.',
    'done.user.unban': 'تم إلغاء حظر المستخدم.',
    'done.chat.approve': 'تم قبول الرسالة.',
    'done.chat.reject': 'تم رفض الرسالة.',
    'done.chat.slow_mode': 'تم حفظ الوضع البطيء.',
    'done.chat.filter': 'تم حفظ مرشّح الكلمات.',

    'err.generic': 'حدث خطأ ما ({code}).',
    'err.unauthenticated': 'انضم بحساب أولًا.',
    'err.forbidden': 'غير مسموح لك بذلك.',
    'err.not_found': 'غير موجود.',
    'err.bad_request': 'لم يفهم الخادم هذا الطلب.',
    'err.validation_error': 'يرجى التحقق من القيم المدخلة.',
    'err.muted': 'تم كتمك.',
    'err.banned': 'أنت محظور من هذه الدردشة.',
    'err.slow_mode': 'الوضع البطيء مفعّل: انتظر قبل الإرسال مجددًا.',
    'err.slow_mode_wait': 'الوضع البطيء مفعّل: انتظر {seconds} ث.',
    'err.rate_limited': 'طلبات كثيرة جدًا: تمهّل قليلًا.',
    'err.rate_limited_wait': 'طلبات كثيرة جدًا: حاول مجددًا بعد {seconds} ث.',
    'err.too_long': 'الرسالة طويلة جدًا (500 حرف كحد أقصى).',
    'err.sold_out': 'نفدت الكمية.',
    'err.deal_not_live': 'هذا العرض لم يعد متاحًا.',
    'err.limit_reached': 'لديك الحد الأقصى المسموح به في هذا العرض.',
    'err.reservation_expired': 'انتهت مدة الحجز قبل الدفع.',
    'err.reservation_not_active': 'هذا الحجز لم يعد نشطًا.',
    'err.insufficient_stock': 'المخزون غير كافٍ لهذه الكمية.',
    'err.deal_already_live': 'يوجد عرض آخر جارٍ بالفعل.',
    'err.show_ended': 'انتهى العرض.',
    'err.idempotency_mismatch': 'تعارض في الطلب: حاول مجددًا.',
    'err.unavailable': 'الخدمة مشغولة: حاول بعد قليل.',
    'err.not_connected': 'غير متصل: بانتظار إعادة الاتصال.',
    'err.disconnected': 'انقطع الاتصال: حاول مجددًا.',
    'err.timeout': 'لم يرد الخادم في الوقت المحدد.',
    'err.network': 'خطأ في الشبكة: حاول مجددًا.',
    'err.internal': 'خطأ في الخادم: حاول مجددًا.',
  },
};

const RTL = new Set(['ar']);
const STORAGE_KEY = 'livecore:lang';

let current = 'en';
const listeners = new Set();

/** Translate `key`; unknown keys fall back to English, then to the key itself. */
export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars[name] ?? '').toString());
}

export const getLang = () => current;

/** Locale for Intl formatting: the browser's own for English, 'ar' for Arabic. */
export const locale = () => (current === 'en' ? undefined : current);

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Switch language: sets <html lang dir>, re-translates static text, notifies listeners. */
export function setLang(lang) {
  current = STRINGS[lang] ? lang : 'en';
  const root = document.documentElement;
  root.lang = current;
  root.dir = RTL.has(current) ? 'rtl' : 'ltr';
  try {
    localStorage.setItem(STORAGE_KEY, current);
  } catch {
    /* storage disabled */
  }
  applyI18n(document);
  const select = document.getElementById('lang-switch');
  if (select && select.value !== current) select.value = current;
  for (const fn of listeners) fn(current);
}

/** Translate every data-i18n* element under `root`. */
export function applyI18n(root = document) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll('[data-i18n-label]')) {
    node.setAttribute('aria-label', t(node.dataset.i18nLabel));
  }
  for (const node of root.querySelectorAll('[data-i18n-title]')) node.title = t(node.dataset.i18nTitle);
}

/**
 * Pick the starting language (?lang=, then the saved choice, then the
 * browser's) and wire the #lang-switch <select>.
 */
export function initLang(select = document.getElementById('lang-switch')) {
  let lang = new URLSearchParams(window.location.search).get('lang');
  if (!lang) {
    try {
      lang = localStorage.getItem(STORAGE_KEY);
    } catch {
      lang = null;
    }
  }
  if (!lang) lang = (navigator.language || 'en').slice(0, 2).toLowerCase();
  if (select) select.addEventListener('change', () => setLang(select.value));
  setLang(STRINGS[lang] ? lang : 'en');
}

export { STRINGS };
