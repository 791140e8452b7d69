/*! certwidget: tax-exemption certificate widget. Vanilla ES2020, no dependencies, no build step.
 * Talks only to the shop's own CertWidgetMiddleware (docs/protocol.md). Builds every node with
 * createElement/textContent: server and buyer data never pass through innerHTML. */
(() => {
  'use strict';
  if (window.CertWidget && window.CertWidget.version) return; // loaded twice: keep the first

  const VERSION = '0.1.0';
  const SCRIPT = document.currentScript;
  const MAX_FILE = 10 * 1024 * 1024;
  const FILE_EXT = /\.(pdf|png|jpe?g|tiff?)$/i;
  const ACCEPT = '.pdf,.png,.jpg,.jpeg,.tif,.tiff,application/pdf,image/png,image/jpeg,image/tiff';
  const TIMEOUT = 20000;
  const UPLOAD_TIMEOUT = 120000;
  const STALE = { stale: true };
  const DEAD_STATUSES = ['expired', 'revoked', 'invalid', 'rejected'];

  // ---------------------------------------------------------------- strings (the one catalog)
  const STRINGS = {
    en: {
      title: 'Tax-exempt purchase',
      sandbox: 'Sandbox',
      sandboxNote: 'Sandbox: test mode, no real certificates',
      loading: 'Loading…',
      zoneHeading: 'Where is this order shipped?',
      zoneIntro: 'Buying for resale or for an exempt organization? Add your exemption certificate and we remove the tax.',
      zoneLabel: 'Ship-to state',
      chooseState: 'Choose a state',
      addState: 'Add another state',
      anotherState: 'Another state',
      add: 'Add state',
      alsoFor: 'Also signing for',
      remove: 'Remove {name}',
      added: '{name} added.',
      removed: '{name} removed.',
      already: '{name} is already on this certificate.',
      pickFirst: 'Choose a state to add.',
      notNeeded: 'No exemption certificate is needed for {name}.',
      cont: 'Continue',
      back: 'Back',
      cancel: 'Cancel',
      cancelled: 'Cancelled. Your order keeps its tax.',
      edit: 'Edit',
      onfileHeading: 'Certificates on file',
      onfileIntro: 'You already have a certificate on file. Use it and you are done.',
      certNo: 'Certificate {number}, {state}',
      permitNo: 'Exemption number {number}',
      expires: 'Expires {date}',
      expiresSoon: 'Expires soon: {date}',
      noExpiry: 'Does not expire',
      useCert: 'Use this certificate',
      renew: 'Renew',
      newCert: 'Add a new certificate',
      choiceHeading: 'How would you like to provide your certificate?',
      choiceFill: 'Fill in and sign online',
      choiceFillHint: 'Takes about two minutes.',
      choiceUpload: 'Upload a signed certificate',
      fileKinds: 'PDF, PNG, JPEG or TIFF, up to 10 MB.',
      fillHeading: 'Certificate details',
      forStates: 'For: {states}',
      purchaser: 'Purchaser',
      fromAccount: 'These details come from your account.',
      p_name: 'Purchaser name',
      p_line1: 'Street address',
      p_city: 'City',
      p_region: 'State or province',
      p_postalCode: 'ZIP or postal code',
      p_country: 'Country',
      p_email: 'Email',
      optional: '(optional)',
      reason: 'Reason for exemption',
      chooseReason: 'Choose a reason',
      number: 'Exemption or permit number',
      numberHint: 'As shown on your permit or registration.',
      numberFor: 'Number for {state}',
      taxIdType: 'Type of tax ID',
      tax_state: 'State-issued',
      tax_fein: 'Federal (FEIN)',
      tax_foreign: 'Foreign diplomat',
      signHeading: 'Sign the certificate',
      signMethod: 'How would you like to sign?',
      draw: 'Draw',
      type: 'Type',
      pad: 'Signature drawing area',
      padHelp: 'Draw your signature in the box with a mouse, pen or finger. To use the keyboard instead, choose “Type” and type your full name.',
      clear: 'Clear signature',
      cleared: 'Signature cleared.',
      typed: 'Type your full name',
      attest: 'I certify that the information on this certificate is correct and that I am authorized to sign it for the purchaser.',
      previewHeading: 'Review your certificate',
      previewIntro: 'Check the details, then submit.',
      states: 'States',
      signature: 'Signature',
      drawnAlt: 'Your drawn signature',
      submit: 'Submit certificate',
      submitting: 'Submitting…',
      uploadHeading: 'Upload your certificate',
      file: 'Certificate file',
      selected: 'Selected: {name} ({size} MB). Choose another file to replace it.',
      upload: 'Upload certificate',
      doneHeading: 'Certificate received',
      appliedHeading: 'Certificate applied',
      done: 'Certificate received for {states}. Tax has been removed from your order.',
      applied: 'Certificate on file applied for {states}. Tax has been removed from your order.',
      pending: 'We are finishing the paperwork in the background; you do not need to do anything else.',
      summary: 'There is a problem',
      errorPrefix: 'Error: ',
      netError: 'We couldn’t reach the server. Your details are kept — try again.',
      retry: 'Retry',
      generic: 'Something went wrong. Please try again.',
      session: 'Your session has expired. Reload the page and try again.',
      e_zones: 'Choose the state this order ships to.',
      e_name: 'Enter the purchaser’s name.',
      e_line1: 'Enter the street address.',
      e_city: 'Enter the city.',
      e_region: 'Enter the state or province.',
      e_postalCode: 'Enter the ZIP or postal code.',
      e_email: 'Enter an email address such as name@example.com.',
      e_reason: 'Choose the reason for the exemption.',
      e_number: 'Enter the exemption or permit number for this reason.',
      e_numberFormat: 'Check the number for {state}: {hint}.',
      e_numberFormatShort: 'Check the number: it is not in the format {state} uses.',
      e_sig: 'Draw your signature, or choose “Type” and type your full name.',
      e_sigName: 'Type your full name to sign.',
      e_attest: 'Confirm that the information is correct to sign the certificate.',
      e_file: 'Choose the certificate file to upload.',
      e_fileType: 'Choose a PDF, PNG, JPEG or TIFF file.',
      e_fileSize: 'The file is {size} MB. Choose a file of 10 MB or less.',
      uploadOnlyNote: 'There is no form to fill in online here for {states}: upload the certificate the state requires.',
      reasonHint: 'Only the reasons these states’ forms accept are listed. For another reason, go back and upload your certificate.',
      youSign: 'You will sign: {forms}.',
      formFor: '{title} ({number}) for {states}',
      businessType: 'Type of business',
      businessTypeOn: 'Type of business on the {number}',
      chooseType: 'Choose a type of business',
      bdesc: 'Description of your business',
      bdescHint: 'What the purchaser sells, makes or does.',
      pdesc: 'Items you are buying',
      pdescHint: 'A general description, for example “Packaging for resale”.',
      kind: 'This certificate covers',
      kindBlanket: 'This and future orders (blanket certificate)',
      kindSingle: 'This order only (single purchase)',
      kindSingleHint: 'Names order {ref}; later orders need a new certificate.',
      kindSingleNoRef: 'Names this order; later orders need a new certificate.',
      expiryDate: 'Expiration date printed on your {number}',
      signerTitle: 'Your title',
      signerTitleHint: 'For example Owner or Purchasing manager.',
      previewIntroMany: 'You are signing {n} documents, one per form. Check each, then submit: one signature covers them all.',
      issuedBy: '{number}, issued by {issuer}',
      seller: 'Seller',
      noSeller: 'Not named by the shop',
      covers: 'Covers',
      coversBlanket: 'This and future orders (blanket)',
      coversSingle: 'This order only: {ref}',
      thisOrder: 'this order',
      expiry: 'Expires',
      expiryPrinted: 'On the date printed on it: {date}',
      signerTitleRow: 'Signer’s title',
      signed: 'Signed',
      reviewPolicy: 'Tax is removed once your certificate is approved.',
      doneReview: 'Certificate received for {states}. Tax is removed once your certificate is approved.',
      e_businessType: 'Choose the type of business.',
      e_bdesc: 'Describe the purchaser’s business.',
      e_pdesc: 'Describe the items you are buying.',
      e_signerTitle: 'Enter your title, for example Owner.',
      e_expiry: 'Enter the expiration date printed on your certificate.',
      e_expiryPast: 'The expiration date must be in the future.',
      e_numberState: 'Enter the number {state} issued you.',
      accountTitle: 'Tax exemption certificates',
      accountHeading: 'Your certificates',
      accountIntro: 'The exemption certificates you gave this shop. Download a copy, or renew one that expires soon.',
      accountEmpty: 'You have no exemption certificates with this shop yet. You can add one at checkout.',
      signInToSee: 'Sign in to see your exemption certificates.',
      statusLabel: 'Status: {status}',
      st_Active: 'Active',
      st_Pending: 'Awaiting review',
      st_Expired: 'Expired',
      st_Revoked: 'Revoked',
      st_Received: 'Received, being filed',
      expired: 'Expired on {date}',
      singleNote: 'For one order only',
      download: 'Download a copy',
      downloadFor: 'Download a copy for {states}',
      downloading: 'Downloading…',
      downloaded: 'Download started: {name}.',
      backToAccount: 'Back to your certificates',
    },
    es: {
      title: 'Compra exenta de impuestos',
      sandbox: 'Sandbox',
      sandboxNote: 'Sandbox: modo de prueba, sin certificados reales',
      loading: 'Cargando…',
      zoneHeading: '¿A dónde se envía este pedido?',
      zoneIntro: '¿Compra para reventa o para una organización exenta? Añada su certificado de exención y quitamos el impuesto.',
      zoneLabel: 'Estado de envío',
      chooseState: 'Elija un estado',
      addState: 'Añadir otro estado',
      anotherState: 'Otro estado',
      add: 'Añadir estado',
      alsoFor: 'También firma para',
      remove: 'Quitar {name}',
      added: '{name} añadido.',
      removed: '{name} quitado.',
      already: '{name} ya está en este certificado.',
      pickFirst: 'Elija un estado para añadir.',
      notNeeded: 'No se necesita certificado de exención para {name}.',
      cont: 'Continuar',
      back: 'Atrás',
      cancel: 'Cancelar',
      cancelled: 'Cancelado. Su pedido mantiene el impuesto.',
      edit: 'Editar',
      onfileHeading: 'Certificados registrados',
      onfileIntro: 'Ya tiene un certificado registrado. Úselo y habrá terminado.',
      certNo: 'Certificado {number}, {state}',
      permitNo: 'Número de exención {number}',
      expires: 'Vence el {date}',
      expiresSoon: 'Vence pronto: {date}',
      noExpiry: 'No vence',
      useCert: 'Usar este certificado',
      renew: 'Renovar',
      newCert: 'Añadir un certificado nuevo',
      choiceHeading: '¿Cómo quiere aportar su certificado?',
      choiceFill: 'Rellenar y firmar en línea',
      choiceFillHint: 'Lleva unos dos minutos.',
      choiceUpload: 'Subir un certificado firmado',
      fileKinds: 'PDF, PNG, JPEG o TIFF, hasta 10 MB.',
      fillHeading: 'Datos del certificado',
      forStates: 'Para: {states}',
      purchaser: 'Comprador',
      fromAccount: 'Estos datos provienen de su cuenta.',
      p_name: 'Nombre del comprador',
      p_line1: 'Dirección',
      p_city: 'Ciudad',
      p_region: 'Estado o provincia',
      p_postalCode: 'Código postal',
      p_country: 'País',
      p_email: 'Correo electrónico',
      optional: '(opcional)',
      reason: 'Motivo de la exención',
      chooseReason: 'Elija un motivo',
      number: 'Número de exención o permiso',
      numberHint: 'Tal como aparece en su permiso o registro.',
      numberFor: 'Número para {state}',
      taxIdType: 'Tipo de identificación fiscal',
      tax_state: 'Emitida por el estado',
      tax_fein: 'Federal (FEIN)',
      tax_foreign: 'Diplomático extranjero',
      signHeading: 'Firme el certificado',
      signMethod: '¿Cómo quiere firmar?',
      draw: 'Dibujar',
      type: 'Escribir',
      pad: 'Área para dibujar la firma',
      padHelp: 'Dibuje su firma en el recuadro con el ratón, un lápiz o el dedo. Para usar el teclado, elija «Escribir» y escriba su nombre completo.',
      clear: 'Borrar firma',
      cleared: 'Firma borrada.',
      typed: 'Escriba su nombre completo',
      attest: 'Certifico que la información de este certificado es correcta y que estoy autorizado a firmarlo en nombre del comprador.',
      previewHeading: 'Revise su certificado',
      previewIntro: 'Compruebe los datos y envíelo.',
      states: 'Estados',
      signature: 'Firma',
      drawnAlt: 'Su firma dibujada',
      submit: 'Enviar certificado',
      submitting: 'Enviando…',
      uploadHeading: 'Suba su certificado',
      file: 'Archivo del certificado',
      selected: 'Seleccionado: {name} ({size} MB). Elija otro archivo para reemplazarlo.',
      upload: 'Subir certificado',
      doneHeading: 'Certificado recibido',
      appliedHeading: 'Certificado aplicado',
      done: 'Certificado recibido para {states}. Se ha quitado el impuesto de su pedido.',
      applied: 'Certificado registrado aplicado para {states}. Se ha quitado el impuesto de su pedido.',
      pending: 'Terminamos el trámite en segundo plano; no tiene que hacer nada más.',
      summary: 'Hay un problema',
      errorPrefix: 'Error: ',
      netError: 'No pudimos contactar con el servidor. Sus datos se conservan; inténtelo de nuevo.',
      retry: 'Reintentar',
      generic: 'Algo salió mal. Inténtelo de nuevo.',
      session: 'Su sesión ha caducado. Recargue la página e inténtelo de nuevo.',
      e_zones: 'Elija el estado al que se envía este pedido.',
      e_name: 'Escriba el nombre del comprador.',
      e_line1: 'Escriba la dirección.',
      e_city: 'Escriba la ciudad.',
      e_region: 'Escriba el estado o la provincia.',
      e_postalCode: 'Escriba el código postal.',
      e_email: 'Escriba un correo electrónico como nombre@ejemplo.com.',
      e_reason: 'Elija el motivo de la exención.',
      e_number: 'Escriba el número de exención o permiso para este motivo.',
      e_numberFormat: 'Revise el número: no tiene el formato que usa {state}.',
      e_numberFormatShort: 'Revise el número: no tiene el formato que usa {state}.',
      e_sig: 'Dibuje su firma, o elija «Escribir» y escriba su nombre completo.',
      e_sigName: 'Escriba su nombre completo para firmar.',
      e_attest: 'Confirme que la información es correcta para firmar el certificado.',
      e_file: 'Elija el archivo del certificado que quiere subir.',
      e_fileType: 'Elija un archivo PDF, PNG, JPEG o TIFF.',
      e_fileSize: 'El archivo ocupa {size} MB. Elija uno de 10 MB o menos.',
      uploadOnlyNote: 'Aquí no hay formulario para rellenar en línea para {states}: suba el certificado que exige el estado.',
      reasonHint: 'Solo aparecen los motivos que aceptan los formularios de estos estados. Para otro motivo, vuelva atrás y suba su certificado.',
      youSign: 'Firmará: {forms}.',
      formFor: '{title} ({number}) para {states}',
      businessType: 'Tipo de negocio',
      businessTypeOn: 'Tipo de negocio en el {number}',
      chooseType: 'Elija un tipo de negocio',
      bdesc: 'Descripción de su negocio',
      bdescHint: 'Lo que el comprador vende, fabrica o hace.',
      pdesc: 'Artículos que compra',
      pdescHint: 'Una descripción general, por ejemplo «Embalajes para reventa».',
      kind: 'Este certificado cubre',
      kindBlanket: 'Este pedido y los siguientes (certificado general)',
      kindSingle: 'Solo este pedido (compra única)',
      kindSingleHint: 'Indica el pedido {ref}; los pedidos siguientes necesitan un certificado nuevo.',
      kindSingleNoRef: 'Indica este pedido; los pedidos siguientes necesitan un certificado nuevo.',
      expiryDate: 'Fecha de vencimiento impresa en su {number}',
      signerTitle: 'Su cargo',
      signerTitleHint: 'Por ejemplo Propietario o Responsable de compras.',
      previewIntroMany: 'Firmará {n} documentos, uno por formulario. Revise cada uno y envíelos: una sola firma los cubre todos.',
      issuedBy: '{number}, emitido por {issuer}',
      seller: 'Vendedor',
      noSeller: 'La tienda no lo ha indicado',
      covers: 'Cubre',
      coversBlanket: 'Este pedido y los siguientes (general)',
      coversSingle: 'Solo este pedido: {ref}',
      thisOrder: 'este pedido',
      expiry: 'Vence',
      expiryPrinted: 'En la fecha impresa: {date}',
      signerTitleRow: 'Cargo del firmante',
      signed: 'Firmado',
      reviewPolicy: 'El impuesto se quita cuando se apruebe su certificado.',
      doneReview: 'Certificado recibido para {states}. El impuesto se quita cuando se apruebe su certificado.',
      e_businessType: 'Elija el tipo de negocio.',
      e_bdesc: 'Describa el negocio del comprador.',
      e_pdesc: 'Describa los artículos que compra.',
      e_signerTitle: 'Escriba su cargo, por ejemplo Propietario.',
      e_expiry: 'Escriba la fecha de vencimiento impresa en su certificado.',
      e_expiryPast: 'La fecha de vencimiento debe ser futura.',
      e_numberState: 'Escriba el número que le emitió {state}.',
      accountTitle: 'Certificados de exención de impuestos',
      accountHeading: 'Sus certificados',
      accountIntro: 'Los certificados de exención que dio a esta tienda. Descargue una copia o renueve uno que vence pronto.',
      accountEmpty: 'Aún no tiene certificados de exención con esta tienda. Puede añadir uno al pagar.',
      signInToSee: 'Inicie sesión para ver sus certificados de exención.',
      statusLabel: 'Estado: {status}',
      st_Active: 'Activo',
      st_Pending: 'En revisión',
      st_Expired: 'Vencido',
      st_Revoked: 'Revocado',
      st_Received: 'Recibido, en trámite',
      expired: 'Venció el {date}',
      singleNote: 'Solo para un pedido',
      download: 'Descargar una copia',
      downloadFor: 'Descargar una copia para {states}',
      downloading: 'Descargando…',
      downloaded: 'Descarga iniciada: {name}.',
      backToAccount: 'Volver a sus certificados',
    },
  };

  // Purchaser fields: key, autocomplete token, required.
  const PURCHASER = [
    ['name', 'organization', true], ['line1', 'address-line1', true], ['city', 'address-level2', true],
    ['region', 'address-level1', true], ['postalCode', 'postal-code', true],
    ['country', 'country', false], ['email', 'email', false],
  ];
  const TAX_IDS = ['state', 'fein', 'foreign'];
  // Server field path -> [step ('form' = fill or upload, whichever is in use), control id].
  // Its key order is the order of the error summary.
  const PATHS = { zones: ['zone', 'cw-zone'] };
  PURCHASER.forEach(([k]) => { PATHS['purchaser.' + k] = ['fill', 'cw-p-' + k]; });
  Object.assign(PATHS, {
    reason: ['form', 'cw-reason'], forms: ['fill', 'cw-reason'], exemptionNumber: ['form', 'cw-number'],
    taxIdType: ['fill', 'cw-taxid'], businessDescription: ['fill', 'cw-bdesc'], propertyDescription: ['fill', 'cw-pdesc'],
    purchaseKind: ['fill', 'cw-kind'], orderReference: ['fill', 'cw-kind'], expirationDate: ['fill', 'cw-expiry'],
    file: ['upload', 'cw-file'], signerTitle: ['sign', 'cw-signer-title'], signature: ['sign', 'cw-sig'],
    'signature.image': ['sign', 'cw-sig'], 'signature.name': ['sign', 'cw-sig-name'], attest: ['sign', 'cw-attest'],
  });
  // The number and business-type paths depend on the states and forms: added per step (see validate).
  const STEP_PATHS = {
    zone: ['zones'],
    fill: PURCHASER.map(([k]) => 'purchaser.' + k).concat('reason', 'taxIdType', 'businessDescription',
      'propertyDescription', 'purchaseKind', 'expirationDate'),
    sign: ['signerTitle', 'signature', 'signature.image', 'signature.name', 'attest'],
    upload: ['reason', 'file'],
  };
  const STEP_ORDER = ['zone', 'onfile', 'choice', 'fill', 'upload', 'sign', 'preview', 'done'];

  // ---------------------------------------------------------------- small helpers
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, kids);
    return el;
  }
  function append(el, kids) {
    for (const kid of kids) {
      if (kid == null || kid === false) continue;
      if (Array.isArray(kid)) append(el, kid);
      else el.append(kid instanceof Node ? kid : String(kid));
    }
  }
  const fmt = (str, vars) => String(str).replace(/\{(\w+)\}/g, (m, k) => (vars && k in vars ? vars[k] : m));
  const upper = (v) => (typeof v === 'string' && v.trim() ? v.trim().toUpperCase() : '');
  const isTrue = (v) => v === true || (typeof v === 'string' && v !== 'false' && v !== '0');
  const mb = (n) => (n / 1048576).toFixed(1);
  const srOnly = (text) => h('span', { class: 'cw-sr' }, text);

  function uuid() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    const b = c.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  }

  function pickLocale(want) {
    for (const cand of [want, document.documentElement.lang]) {
      const code = String(cand || '').toLowerCase().split(/[-_]/)[0];
      if (STRINGS[code]) return code;
    }
    return 'en';
  }

  function readConfig() {
    const node = document.getElementById('certwidget-config');
    if (!node) return {};
    try {
      const cfg = JSON.parse(node.textContent || '{}');
      return cfg && typeof cfg === 'object' ? cfg : {};
    } catch (e) {
      return {};
    }
  }

  function cssSource() {
    const link = document.querySelector('link[data-certwidget-css]') ||
      document.querySelector('link[rel~="stylesheet"][href*="certwidget"][href*=".css"]');
    if (link && link.href) return { href: link.href, nonce: link.nonce };
    if (SCRIPT && SCRIPT.src) return { href: SCRIPT.src.replace(/\.js(?=[?#]|$)/, '.css'), nonce: SCRIPT.nonce };
    return null;
  }

  function applyTheme(el, theme) {
    if (!theme) return;
    if (typeof theme === 'string') {
      const t = theme.trim();
      if (t.startsWith('{')) {
        try { theme = JSON.parse(t); } catch (e) { return; }
      } else {
        el.setAttribute('theme', t);
        return;
      }
    }
    if (typeof theme !== 'object') return;
    for (const [key, raw] of Object.entries(theme)) {
      if (key === 'mode' || key === 'name') { el.setAttribute('theme', String(raw)); continue; }
      if (!/^[a-zA-Z][a-zA-Z0-9]*$/.test(key) || raw == null) continue;
      const value = typeof raw === 'number' && key !== 'lineHeight' ? raw + 'px' : String(raw);
      el.style.setProperty('--cw-' + key.replace(/[A-Z]/g, (m) => '-' + m.toLowerCase()), value);
    }
  }

  function dateText(iso, lang) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso || '');
    if (!m) return iso || '';
    try {
      return new Intl.DateTimeFormat(lang === 'es' ? 'es' : 'en-US', { dateStyle: 'medium', timeZone: 'UTC' })
        .format(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])));
    } catch (e) {
      return iso;
    }
  }

  function safeRegExp(src) {
    try { return new RegExp(src); } catch (e) { return null; }
  }

  // ---------------------------------------------------------------- the widget
  const instances = new WeakMap();

  class Widget {
    constructor(host, opts) {
      this.host = host;
      this.o = opts;
      this.ep = String(opts.endpoint || '/certwidget').replace(/\/+$/, '');
      this.lang = pickLocale(opts.locale);
      this.L = STRINGS[this.lang];
      // data-view="account": the signed-in buyer's certificates (the shop's account page).
      this.account = String(opts.view || '').toLowerCase() === 'account';
      this.zones = [];
      this.zmap = new Map();
      this.rcache = new Map();
      this.fcache = new Map(); // zone -> what GET /forms says of it
      this.fdefs = {}; // form id -> the form
      this.policy = null; // seller, exemptOnSubmit, singlePurchase (GET /forms)
      this.reasons = [];
      this.ctl = new Set();
      this.undo = [];
      this.gen = 0;
      this.s = this.fresh(null);
      this.api = {
        element: host,
        version: VERSION,
        destroy: () => this.destroy(),
        reset: () => this.reset(),
      };
      this.build();
      this.loadZones();
    }

    fresh(prev) {
      const o = this.o;
      const p = o.purchaser && typeof o.purchaser === 'object' ? o.purchaser : {};
      const purchaser = {};
      const locked = new Set();
      for (const [k] of PURCHASER) {
        purchaser[k] = typeof p[k] === 'string' ? p[k] : '';
        if (o.purchaser && !isTrue(o.editPurchaser) && purchaser[k].trim()) locked.add(k);
      }
      if (!purchaser.country) purchaser.country = 'US';
      return {
        step: 'zone', hist: [], zone: upper(o.shipZone), extras: [], picking: false,
        token: prev ? prev.token : o.token || null, tokenExp: prev ? prev.tokenExp : 0,
        tokenZones: prev ? prev.tokenZones : o.token ? '*' : '',
        certs: [], mode: 'fill', reason: '', number: '', numbers: {}, taxIdType: 'state', purchaser, locked,
        businessTypes: {}, businessDescription: '', propertyDescription: '', signerTitle: '', purchaseKind: 'blanket',
        expirationDate: '', orderRef: typeof o.orderReference === 'string' ? o.orderReference : '',
        sigMode: 'draw', strokes: [], sigImage: '', padSize: null, typed: '', attest: false, file: null,
        errors: {}, idem: null, busy: false, result: null, fired: prev ? prev.fired : new Set(),
      };
    }

    build() {
      const L = this.L;
      this.el = document.createElement('cert-widget');
      applyTheme(this.el, this.o.theme);
      this.root = this.el.attachShadow({ mode: 'open' });
      // title: false when the shop's page already heads the widget; a string replaces the default.
      const title = this.o.title === false || this.o.title === '' ? null : typeof this.o.title === 'string' ? this.o.title
        : this.account ? L.accountTitle : L.title;
      this.frame = h('section', { class: 'cw', 'aria-labelledby': title ? 'cw-title' : null, 'aria-label': title ? null : this.account ? L.accountTitle : L.title, lang: this.lang },
        // The embedded sandbox (the middleware's config says so): a badge nobody can miss.
        isTrue(this.o.sandbox) ? h('p', { class: 'cw-sandbox', role: 'note', 'aria-label': L.sandboxNote, title: L.sandboxNote }, L.sandbox) : null,
        title ? h('h2', { id: 'cw-title', class: 'cw-title' }, title) : null,
        (this.sumWrap = h('div', { role: 'alert' })),
        (this.view = h('div', { class: 'cw-view' })),
        (this.probWrap = h('div', { role: 'alert' })),
        (this.status = h('p', { class: 'cw-sr', role: 'status', 'aria-live': 'polite' })));
      const css = cssSource();
      if (css) {
        // Same URL as the page's own link: served from cache, nothing extra is fetched.
        const link = h('link', { rel: 'stylesheet', href: css.href });
        if (css.nonce) link.nonce = css.nonce;
        this.frame.hidden = true; // avoid a flash of unstyled content
        const show = () => { this.frame.hidden = false; };
        link.addEventListener('load', show);
        link.addEventListener('error', show);
        setTimeout(show, 3000);
        this.root.append(link);
      }
      this.root.append(this.frame);
      this.host.append(this.el);
    }

    $(id) { return this.root.getElementById(id); }

    say(msg) {
      this.status.textContent = '';
      setTimeout(() => { if (!this.dead) this.status.textContent = msg || ''; }, 60);
    }

    emit(type, detail, cb, arg) {
      const fn = this.o[cb];
      if (typeof fn === 'function') {
        try { fn.call(this.api, arg === undefined ? detail : arg); } catch (e) {
          if (typeof window.reportError === 'function') window.reportError(e); else setTimeout(() => { throw e; });
        }
      }
      this.host.dispatchEvent(new CustomEvent('certwidget:' + type, { bubbles: true, composed: true, detail }));
    }

    // ------------------------------------------------------------ network
    async req(method, path, { json, form, auth, key, timeout = TIMEOUT } = {}) {
      const gen = this.gen;
      let reminted = false;
      for (;;) {
        if (auth) await this.ensureToken();
        if (this.dead || gen !== this.gen) throw STALE;
        const headers = { Accept: 'application/json' };
        let body;
        if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
        else if (form) body = form;
        if (auth) headers.Authorization = 'Bearer ' + this.s.token;
        if (key) headers['Idempotency-Key'] = key;
        const ac = new AbortController();
        this.ctl.add(ac);
        let timedOut = false;
        const timer = setTimeout(() => { timedOut = true; ac.abort(); }, timeout);
        let res;
        let text = '';
        try {
          res = await fetch(this.ep + path, { method, headers, body, credentials: 'same-origin', signal: ac.signal });
          text = await res.text();
        } catch (e) {
          if (this.dead || gen !== this.gen) throw STALE;
          throw { net: true, status: 0, code: timedOut ? 'timeout' : 'network', message: String(e && e.message || e) };
        } finally {
          clearTimeout(timer);
          this.ctl.delete(ac);
        }
        if (this.dead || gen !== this.gen) throw STALE;
        let data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (res.status === 401 && auth && !reminted) {
          reminted = true; // the token expired or the key rotated: mint a fresh one, once
          this.s.token = null;
          continue;
        }
        if (res.ok) return { status: res.status, data: data || {} };
        const err = (data && data.error) || {};
        throw {
          net: res.status >= 500 || res.status === 408 || res.status === 429,
          status: res.status, code: err.code || 'http_' + res.status, message: err.message || '',
          fields: err.fields && typeof err.fields === 'object' ? err.fields : null,
        };
      }
    }

    async ensureToken() {
      const s = this.s;
      const zones = this.chosen();
      const want = zones.join(',');
      const fresh = s.token && (!s.tokenExp || Date.now() < s.tokenExp - 30000);
      if (fresh && (s.tokenZones === '*' || s.tokenZones === want)) return;
      if (!this.minting) {
        this.minting = (async () => {
          const { data } = await this.req('POST', '/ecommerce/token', { json: { zones } });
          s.token = data.token;
          const exp = data.expiresAt;
          s.tokenExp = typeof exp === 'number' ? (exp < 1e12 ? exp * 1000 : exp) : Date.parse(exp) || 0;
          s.tokenZones = want;
        })().finally(() => { this.minting = null; });
      }
      await this.minting;
    }

    setBusy(btn, label) {
      this.s.busy = !!label;
      if (label) {
        const act = this.root.activeElement;
        this.busyBtn = btn || (act && act.tagName === 'BUTTON' ? act : this.view.querySelector('.cw-primary'));
        if (this.busyBtn) {
          this.busyBtn.dataset.label = this.busyBtn.textContent;
          this.busyBtn.textContent = label;
          this.busyBtn.setAttribute('aria-disabled', 'true');
        }
        this.say(label);
      } else if (this.busyBtn) {
        if (this.busyBtn.dataset.label) this.busyBtn.textContent = this.busyBtn.dataset.label;
        this.busyBtn.removeAttribute('aria-disabled');
        this.busyBtn = null;
      }
    }

    fail(e, retry, isSubmit) {
      if (e === STALE || this.dead) return;
      this.setBusy(null);
      const L = this.L;
      const info = { status: e.status || 0, code: e.code || 'error', message: e.message || '', fields: e.fields || null };
      if (e.net) {
        info.message = info.message || L.netError;
        this.problem(L.netError, retry);
      } else if (e.status === 422 && e.fields && Object.keys(e.fields).length) {
        this.serverErrors(e.fields);
      } else if (e.status === 401) {
        this.problem(L.session);
      } else if (e.message && e.message.length) {
        this.problem(e.message);
      } else {
        this.problem(L.generic, retry);
      }
      // A definitive answer (4xx) ends this attempt-set: the next submit gets a fresh Idempotency-Key.
      if (!e.net) this.s.idem = null;
      if (isSubmit) this.emit('failure', info, 'onCertFailure');
    }

    problem(msg, retry) {
      this.probWrap.replaceChildren(h('div', { class: 'cw-problem' },
        h('p', {}, msg),
        retry ? h('button', { type: 'button', class: 'cw-btn', onclick: () => { this.clearProblem(); retry(); } }, this.L.retry) : null));
      this.say('');
    }

    clearProblem() { this.probWrap.replaceChildren(); }

    // ------------------------------------------------------------ zones, steps
    async loadZones() {
      this.view.replaceChildren(h('p', { class: 'cw-muted' }, this.L.loading));
      let data;
      try {
        [{ data }] = await Promise.all([this.req('GET', '/zones'), this.loadBuyer()]);
      } catch (e) {
        this.fail(e, () => this.loadZones());
        return;
      }
      this.zones = (Array.isArray(data.zones) ? data.zones : []).filter((z) => z && z.code)
        .sort((a, b) => String(a.name).localeCompare(String(b.name), this.lang));
      this.zmap = new Map(this.zones.map((z) => [z.code, z]));
      if (!this.zmap.has(this.s.zone)) this.s.zone = '';
      if (this.account) await this.loadAccount(false);
      else this.go('zone', { push: false, focus: false });
      if (!this.ready) {
        this.ready = true;
        this.emit('ready', { version: VERSION, shipZone: this.s.zone || null, locale: this.lang }, 'onInit');
      }
      if (!this.account) this.checkNoTax(this.s.zone);
    }

    // Who the shop says is signed in and the order's ship-to state: asked once, next to the
    // zones, so checkout pages carry no buyer data. The page's own options win over it.
    async loadBuyer() {
      if (this.buyerKnown) return;
      const page = location.pathname + location.search;
      const { data } = await this.req('GET', '/buyer?page=' + encodeURIComponent(page));
      const o = this.o;
      if (!('shipZone' in o) && typeof data.shipZone === 'string') o.shipZone = data.shipZone;
      if (!('purchaser' in o) && data.purchaser && typeof data.purchaser === 'object') o.purchaser = data.purchaser;
      if (!('orderReference' in o) && typeof data.orderReference === 'string') o.orderReference = data.orderReference;
      this.signedIn = data.signedIn === true;
      this.buyerKnown = true;
      this.s = this.fresh(this.s);
    }

    zoneName(code) { const z = this.zmap.get(code); return z ? z.name : code; }
    taxable(code) { const z = this.zmap.get(code); return !!z && z.salesTax !== false; }
    chosen() { return [this.s.zone, ...this.s.extras].filter((c, i, a) => c && a.indexOf(c) === i && this.taxable(c)); }
    stateList(codes) { return (codes && codes.length ? codes : this.chosen()).map((c) => this.zoneName(c)).join(', '); }

    checkNoTax(code) {
      if (!code || this.taxable(code) || !this.zmap.has(code)) return false;
      const name = this.zoneName(code);
      const note = this.$('cw-zone-note');
      if (note) { note.textContent = fmt(this.L.notNeeded, { name }); note.hidden = false; }
      this.say(fmt(this.L.notNeeded, { name }));
      if (!this.s.fired.has(code)) {
        this.s.fired.add(code);
        this.emit('notneeded', { zone: code, name }, 'onNotNeeded', code);
      }
      return true;
    }

    go(step, { push = true, focus = true, keepSummary = false } = {}) {
      const s = this.s;
      if (push && s.step !== step && s.step !== 'done') s.hist.push(s.step);
      s.step = step;
      this.undo.splice(0).forEach((fn) => fn());
      this.clearProblem();
      if (!keepSummary) this.sumWrap.replaceChildren();
      this.view.replaceChildren(this['v_' + step]());
      if (step === 'zone') this.drawChips();
      this.allPaths().forEach((p) => this.paint(p));
      if (focus) { const hd = this.$('cw-h'); if (hd) hd.focus(); }
    }

    back() {
      const prev = this.s.hist.pop();
      if (prev) this.go(prev, { push: false });
    }

    cancel() {
      this.reset(true);
      this.say(this.L.cancelled);
      this.emit('cancel', {}, 'onCancel');
    }

    reset(focus) {
      this.gen++;
      this.ctl.forEach((ac) => ac.abort());
      this.ctl.clear();
      this.minting = null;
      this.s = this.fresh(this.s);
      this.s.busy = false;
      this.busyBtn = null;
      const inside = focus === true || this.root.activeElement != null;
      if (this.account && this.zones.length) {
        this.loadAccount(inside);
      } else if (this.zones.length) {
        this.go('zone', { push: false, focus: inside });
        this.checkNoTax(this.s.zone);
      } else {
        this.loadZones();
      }
    }

    destroy() {
      if (this.dead) return;
      this.dead = true;
      this.ctl.forEach((ac) => ac.abort());
      this.undo.splice(0).forEach((fn) => fn());
      this.el.remove();
      if (instances.get(this.host) === this) instances.delete(this.host);
    }

    // ------------------------------------------------------------ building blocks
    heading(text) { return h('h3', { id: 'cw-h', class: 'cw-h', tabindex: '-1' }, text); }

    form(kids, actions, onsubmit) {
      return h('form', {
        class: 'cw-form', novalidate: true,
        onsubmit: (e) => { e.preventDefault(); if (!this.s.busy) onsubmit(); },
      }, kids, h('div', { class: 'cw-actions' }, actions));
    }

    btn(label, onclick, cls = '') {
      return h('button', { type: 'button', class: 'cw-btn ' + cls, onclick: (e) => { if (!this.s.busy) onclick(e); } }, label);
    }
    primary(label) { return h('button', { type: 'submit', class: 'cw-btn cw-primary' }, label); }
    backBtn() { return this.s.hist.length ? this.btn(this.L.back, () => this.back()) : null; }
    cancelBtn() { return this.btn(this.L.cancel, () => this.cancel(), 'cw-link'); }

    field(id, label, control, { hint, optional } = {}) {
      control.id = id;
      if (hint) control.setAttribute('aria-describedby', id + '-hint');
      return h('div', { class: 'cw-field' },
        h('label', { for: id, id: id + '-label' }, label, optional ? ' ' + this.L.optional : null),
        hint ? h('p', { class: 'cw-hint', id: id + '-hint' }, hint) : null,
        h('p', { class: 'cw-err', id: id + '-error', hidden: true }),
        control);
    }

    group(id, legend, kids, cls = '') {
      return h('fieldset', { id, class: 'cw-group ' + cls },
        h('legend', {}, legend),
        h('p', { class: 'cw-err', id: id + '-error', hidden: true }),
        kids);
    }

    radio(name, value, label, checked, onchange, hint) {
      const id = `${name}-${value}`;
      return h('div', { class: 'cw-choice' },
        h('input', { type: 'radio', id, name, value, checked, 'aria-describedby': hint ? id + '-hint' : null, onchange }),
        h('label', { for: id }, label),
        hint ? h('p', { class: 'cw-hint', id: id + '-hint' }, hint) : null);
    }

    input(value, oninput, extra) {
      return h('input', Object.assign({ type: 'text', class: 'cw-input', value: value || '', oninput }, extra));
    }

    reasonSelect(onchange) {
      return h('select', { class: 'cw-input', onchange },
        h('option', { value: '' }, this.L.chooseReason),
        this.reasons.map((r) => h('option', { value: r.code, selected: r.code === this.s.reason }, r.name || r.code)));
    }

    numberFields() {
      const s = this.s;
      const select = this.reasonSelect((e) => {
        s.reason = e.target.value;
        this.fix('reason');
        if (s.mode === 'upload') {
          this.refreshNumberLabel();
          this.numberPaths().forEach((p) => { if (s.errors[p] || this.numberValue(p)) this.checkNumber(p); });
        } else {
          this.drawFormFields();
        }
      });
      if (s.mode === 'upload') {
        return [this.field('cw-reason', this.L.reason, select), this.numberKids()];
      }
      return [
        this.field('cw-reason', this.L.reason, select, { hint: this.L.reasonHint }),
        h('div', { id: 'cw-formfields' }, this.formFieldKids()),
      ];
    }

    // What the chosen forms ask, redrawn when the reason (and so the forms) changes.
    formFieldKids() {
      const s = this.s;
      const L = this.L;
      const groups = this.formGroups();
      const kids = [];
      if (groups.length) {
        kids.push(h('p', { class: 'cw-note', id: 'cw-forms-note' }, fmt(L.youSign, {
          forms: groups.map((g) => fmt(L.formFor, { title: g.form.title, number: g.form.number, states: this.stateList(g.zones) })).join('; '),
        })));
      }
      kids.push(h('div', { id: 'cw-numbers' }, this.numberKids()));
      kids.push(this.group('cw-taxid', L.taxIdType, h('div', { class: 'cw-inline' },
        TAX_IDS.map((t) => this.radio('cw-taxid', t, L['tax_' + t], s.taxIdType === t, (e) => {
          s.taxIdType = e.target.value;
          this.drawNumbers();
        })))));
      const bts = this.btForms();
      bts.forEach((f) => {
        const path = bts.length === 1 ? 'businessType' : 'businessType.' + f.id;
        const select = h('select', { class: 'cw-input', onchange: (e) => { s.businessTypes[f.id] = e.target.value; this.fix(path); } },
          h('option', { value: '' }, L.chooseType),
          f.businessTypes.map((b) => h('option', { value: b.code, selected: s.businessTypes[f.id] === b.code }, b.label)));
        kids.push(this.field('cw-bt-' + f.id, bts.length === 1 ? L.businessType : fmt(L.businessTypeOn, { number: f.number }), select));
      });
      if (this.asks('business_description')) {
        kids.push(this.field('cw-bdesc', L.bdesc, this.input(s.businessDescription, (e) => {
          s.businessDescription = e.target.value;
          this.fix('businessDescription');
        }, { autocomplete: 'off' }), { hint: L.bdescHint }));
      }
      if (this.asks('property_description')) {
        kids.push(this.field('cw-pdesc', L.pdesc, this.input(s.propertyDescription, (e) => {
          s.propertyDescription = e.target.value;
          this.fix('propertyDescription');
        }, { autocomplete: 'off' }), { hint: L.pdescHint }));
      }
      if (this.kindChoice()) {
        const pick = (e) => { s.purchaseKind = e.target.value; this.fix('purchaseKind'); };
        kids.push(this.group('cw-kind', L.kind, [
          this.radio('cw-kind', 'blanket', L.kindBlanket, s.purchaseKind !== 'single', pick),
          this.radio('cw-kind', 'single', L.kindSingle, s.purchaseKind === 'single', pick,
            s.orderRef ? fmt(L.kindSingleHint, { ref: s.orderRef }) : L.kindSingleNoRef)]));
      }
      const fixed = this.fixedExpiry();
      if (fixed.length) {
        kids.push(this.field('cw-expiry', fmt(L.expiryDate, { number: fixed[0].form.number }), this.input(s.expirationDate, (e) => {
          s.expirationDate = e.target.value;
          this.fix('expirationDate');
        }, { type: 'date' })));
      }
      return kids;
    }

    drawFormFields() {
      const box = this.$('cw-formfields');
      if (box) box.replaceChildren(...this.formFieldKids());
      this.allPaths().forEach((p) => this.paint(p));
    }

    drawNumbers() {
      const box = this.$('cw-numbers');
      if (box) box.replaceChildren(...this.numberKids());
      this.allPaths().forEach((p) => this.paint(p));
    }

    // One number, or (several states, state-issued numbers) one per state: a number a state
    // issued is never carried to another state.
    numberKids() {
      const s = this.s;
      const L = this.L;
      const opts = (path) => ({ autocomplete: 'off', spellcheck: 'false', onblur: (e) => this.blurCheck(e, path) });
      if (!this.perState()) {
        const num = this.input(s.number, (e) => { s.number = e.target.value; this.fix('exemptionNumber'); }, opts('exemptionNumber'));
        return [this.field('cw-number', L.number, num, { hint: this.numberHint(), optional: this.numberOptional() })];
      }
      return this.chosen().map((z) => this.field('cw-num-' + z, fmt(L.numberFor, { state: this.zoneName(z) }),
        this.input(s.numbers[z], (e) => { s.numbers[z] = e.target.value; this.fix('exemptionNumbers.' + z); }, opts('exemptionNumbers.' + z)),
        { hint: this.numberHint([z]), optional: this.numberOptional() }));
    }

    // ---------------------------------------------------------- forms (GET /forms)
    async loadForms(zones) {
      const missing = zones.filter((z) => !this.fcache.has(z));
      if (!missing.length && this.policy) return;
      const ask = missing.length ? missing : zones.slice(0, 1);
      const { data } = await this.req('GET', '/forms?zones=' + encodeURIComponent(ask.join(',')));
      (Array.isArray(data.zones) ? data.zones : []).forEach((z) => { if (z && z.code) this.fcache.set(z.code, z); });
      Object.assign(this.fdefs, data.forms && typeof data.forms === 'object' ? data.forms : {});
      this.policy = { seller: data.seller || null, exemptOnSubmit: data.exemptOnSubmit !== false, single: data.singlePurchase === true };
    }

    zoneForms(code) { return this.fcache.get(code) || { reasons: [], expiry: {} }; }

    // The reasons every chosen state has a form for.
    fillReasons() {
      const zones = this.chosen();
      if (!zones.length) return [];
      let list = this.zoneForms(zones[0]).reasons || [];
      for (const z of zones.slice(1)) {
        const codes = new Set((this.zoneForms(z).reasons || []).map((r) => r.code));
        list = list.filter((r) => codes.has(r.code));
      }
      return list;
    }

    fillable() { return this.fillReasons().length > 0; }

    formIdOf(zone) {
      const r = (this.zoneForms(zone).reasons || []).find((x) => x.code === this.s.reason);
      return r ? r.form : null;
    }

    // The forms the buyer signs for the chosen reason, each with its states (one document each).
    formGroups() {
      const groups = [];
      if (this.s.mode === 'upload' || !this.s.reason) return groups;
      for (const z of this.chosen()) {
        const form = this.fdefs[this.formIdOf(z)];
        if (!form) continue;
        let g = groups.find((x) => x.form.id === form.id);
        if (!g) groups.push((g = { form, zones: [] }));
        g.zones.push(z);
      }
      return groups;
    }

    asks(field) { return this.formGroups().some((g) => (g.form.asks || []).includes(field)); }
    btForms() {
      return this.formGroups().map((g) => g.form)
        .filter((f) => Array.isArray(f.businessTypes) && f.businessTypes.length && (f.asks || []).includes('business_type'));
    }
    btPaths() {
      const forms = this.btForms();
      return forms.length === 1 ? ['businessType'] : forms.map((f) => 'businessType.' + f.id);
    }
    // Single or blanket, where every form offers both and the shop names its orders.
    kindChoice() {
      const forms = this.formGroups().map((g) => g.form);
      return !!(this.policy && this.policy.single) && forms.length > 0 && forms.every((f) => f.single && f.blanket);
    }
    purchaseKind() { return this.kindChoice() && this.s.purchaseKind === 'single' ? 'single' : 'blanket'; }
    expiryOf(form, zone) { return (this.zoneForms(zone).expiry || {})[form.id] || { kind: 'none', date: null }; }
    fixedExpiry() { return this.formGroups().filter((g) => g.zones.some((z) => this.expiryOf(g.form, z).kind === 'fixed_date')); }
    perState() { return this.s.mode !== 'upload' && this.s.taxIdType === 'state' && this.chosen().length > 1; }

    numberPaths() { return this.perState() ? this.chosen().map((z) => 'exemptionNumbers.' + z) : ['exemptionNumber']; }
    numberValue(path) { return path === 'exemptionNumber' ? this.s.number.trim() : String(this.s.numbers[path.slice(17)] || '').trim(); }

    reasonObj() { return this.reasons.find((r) => r.code === this.s.reason) || null; }
    numberOptional() { const r = this.reasonObj(); return !!r && r.numberRequired === false; }

    refreshNumberLabel() {
      const label = this.$('cw-number-label');
      if (label) label.textContent = this.L.number + (this.numberOptional() ? ' ' + this.L.optional : '');
      const hint = this.$('cw-number-hint');
      if (hint) hint.textContent = this.numberHint();
    }

    // Format rules that apply to the chosen states and reason (from /zones numberPattern or
    // /reasons pattern); a state's format is for the numbers it issues, not a FEIN.
    numberRules(zones = this.chosen()) {
      const rules = [];
      if (this.s.taxIdType !== 'state') return rules;
      const r = this.reasonObj();
      for (const code of zones) {
        const np = (this.zmap.get(code) || {}).numberPattern;
        if (np && np.pattern && (!Array.isArray(np.reasons) || np.reasons.includes(this.s.reason))) {
          rules.push({ state: this.zoneName(code), re: safeRegExp(np.pattern), hint: np.hint || '', strip: true });
        }
      }
      const rp = r && (r.pattern || (r.numberPattern && r.numberPattern.pattern) || r.numberPattern);
      if (typeof rp === 'string') rules.push({ state: this.stateList(), re: safeRegExp(rp), hint: r.numberHint || '', strip: false });
      return rules.filter((x) => x.re);
    }

    numberHint(zones = this.chosen()) {
      const parts = [];
      if (this.lang === 'en' && this.s.mode !== 'upload' && this.s.taxIdType === 'state' && zones.length === 1) {
        const form = this.fdefs[this.formIdOf(zones[0])];
        if (form && form.numberLabel) parts.push(form.numberLabel);
      }
      if (this.lang === 'en') this.numberRules(zones).filter((x) => x.hint).forEach((x) => parts.push(x.hint.charAt(0).toUpperCase() + x.hint.slice(1)));
      return parts.length ? parts.join('. ') + '.' : this.L.numberHint;
    }

    // The one number covers every state; a state's own number only itself.
    numberProblem(path) {
      const r = this.reasonObj();
      const own = path !== 'exemptionNumber';
      const zones = own ? [path.slice(17)] : this.chosen();
      const n = this.numberValue(path);
      if (!n) {
        if (!(zones.length && r && r.numberRequired)) return null;
        return own ? fmt(this.L.e_numberState, { state: this.zoneName(zones[0]) }) : this.L.e_number;
      }
      for (const rule of this.numberRules(zones)) {
        if (!rule.re.test(rule.strip ? n.replace(/[\s.-]/g, '') : n)) {
          return fmt(rule.hint && this.lang === 'en' ? this.L.e_numberFormat : this.L.e_numberFormatShort, { state: rule.state, hint: rule.hint });
        }
      }
      return null;
    }

    // Instant format check on leaving the field, except when leaving for a button: the message
    // would shift the layout under the pointer and the click would miss (the button validates anyway).
    blurCheck(e, path) {
      const to = e.relatedTarget;
      if (!(to && to.tagName === 'BUTTON')) this.checkNumber(path);
    }

    checkNumber(path) {
      const msg = this.numberProblem(path);
      if (msg) this.s.errors[path] = msg; else delete this.s.errors[path];
      this.paint(path);
      if (!msg) this.dropSummaryItem(path);
    }

    // Field path -> [step, control id]; per-state numbers are dynamic.
    def(path) {
      if (PATHS[path]) return PATHS[path];
      if (path.startsWith('exemptionNumbers.')) return ['fill', 'cw-num-' + path.slice(17)];
      if (path === 'exemptionNumbers') return ['fill', 'cw-numbers'];
      if (path.startsWith('forms.')) return ['fill', 'cw-reason'];
      if (path === 'businessType') {
        const f = this.btForms()[0];
        return f ? ['fill', 'cw-bt-' + f.id] : ['fill', 'cw-reason'];
      }
      if (path.startsWith('businessType.')) return ['fill', 'cw-bt-' + path.slice(13)];
      return null;
    }

    allPaths() {
      const keys = Object.keys(PATHS);
      const at = keys.indexOf('exemptionNumber') + 1;
      return keys.slice(0, at).concat(this.chosen().map((z) => 'exemptionNumbers.' + z), this.btPaths(), keys.slice(at));
    }

    stepOf(path) {
      const d = this.def(path);
      if (!d) return null;
      return d[0] === 'form' ? (this.s.mode === 'upload' ? 'upload' : 'fill') : d[0];
    }

    // ------------------------------------------------------------ errors
    paint(path) {
      const def = this.def(path);
      if (!def) return;
      const ctl = this.$(def[1]);
      if (!ctl) return;
      const e = this.s.errors;
      const msg = [path, ...Object.keys(e)].filter((p) => e[p] && (this.def(p) || [])[1] === def[1]).map((p) => e[p])[0];
      const err = this.$(def[1] + '-error');
      if (err) {
        err.replaceChildren(...(msg ? [srOnly(this.L.errorPrefix), msg] : []));
        err.hidden = !msg;
      }
      const hint = this.$(def[1] + '-hint');
      const ids = [hint && hint.id, msg && err && err.id].filter(Boolean).join(' ');
      if (ids) ctl.setAttribute('aria-describedby', ids); else ctl.removeAttribute('aria-describedby');
      if (ctl.tagName !== 'FIELDSET') {
        if (msg) ctl.setAttribute('aria-invalid', 'true'); else ctl.removeAttribute('aria-invalid');
      } else {
        ctl.classList.toggle('cw-invalid', !!msg);
      }
    }

    // A field was edited: drop its error once the value is acceptable (never adds errors while typing).
    fix(path) {
      const e = this.s.errors;
      const paths = path === 'signature' ? ['signature', 'signature.image'] : [path];
      if (!paths.some((p) => e[p]) || this.problemFor(path)) return;
      paths.forEach((p) => { delete e[p]; this.dropSummaryItem(p); });
      this.paint(path);
    }

    dropSummaryItem(path) {
      const li = Array.from(this.sumWrap.querySelectorAll('li')).find((x) => x.dataset.path === path);
      if (!li) return;
      const list = li.parentNode;
      li.remove();
      if (!list.children.length) this.sumWrap.replaceChildren();
    }

    problemFor(path) {
      const s = this.s;
      const L = this.L;
      if (path === 'zones') return this.chosen().length ? null : L.e_zones;
      if (path.startsWith('purchaser.')) {
        const k = path.slice(10);
        const v = (s.purchaser[k] || '').trim();
        const def = PURCHASER.find((x) => x[0] === k);
        if (def && def[2] && !v) return L['e_' + k];
        if (k === 'email' && v && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(v)) return L.e_email;
        return null;
      }
      if (path === 'reason') return s.reason ? null : L.e_reason;
      if (path === 'exemptionNumber' || path.startsWith('exemptionNumbers.')) return this.numberProblem(path);
      if (path === 'taxIdType' || path === 'purchaseKind' || path === 'orderReference') return null;
      if (path === 'businessType' || path.startsWith('businessType.')) {
        const f = path === 'businessType' ? this.btForms()[0] : this.btForms().find((x) => x.id === path.slice(13));
        return f && !s.businessTypes[f.id] ? L.e_businessType : null;
      }
      if (path === 'businessDescription') return this.asks('business_description') && !s.businessDescription.trim() ? L.e_bdesc : null;
      if (path === 'propertyDescription') return this.asks('property_description') && !s.propertyDescription.trim() ? L.e_pdesc : null;
      if (path === 'signerTitle') return this.asks('title') && !s.signerTitle.trim() ? L.e_signerTitle : null;
      if (path === 'expirationDate') {
        if (!this.fixedExpiry().length) return null;
        if (!/^\d{4}-\d{2}-\d{2}$/.test(s.expirationDate)) return L.e_expiry;
        return s.expirationDate <= new Date().toISOString().slice(0, 10) ? L.e_expiryPast : null;
      }
      if (path === 'signature' || path === 'signature.image') return s.sigMode === 'draw' && !s.strokes.length ? L.e_sig : null;
      if (path === 'signature.name') return s.sigMode === 'type' && !s.typed.trim() ? L.e_sigName : null;
      if (path === 'attest') return s.attest ? null : L.e_attest;
      if (path === 'file') {
        const f = s.file;
        if (!f) return L.e_file;
        if (!FILE_EXT.test(f.name || '')) return L.e_fileType;
        if (f.size > MAX_FILE) return fmt(L.e_fileSize, { size: mb(f.size) });
        return null;
      }
      return null;
    }

    // Client-side check of one step: true when it may proceed.
    validate(step) {
      const s = this.s;
      const dynamic = step === 'fill' ? this.numberPaths().concat(this.btPaths()) : step === 'upload' ? this.numberPaths() : [];
      const paths = (STEP_PATHS[step] || []).concat(dynamic);
      const found = {};
      for (const p of paths) {
        delete s.errors[p];
        if (p === 'signature.image') continue;
        const msg = this.problemFor(p);
        if (msg) found[p] = msg;
      }
      Object.assign(s.errors, found);
      paths.forEach((p) => this.paint(p));
      if (Object.keys(found).length) { this.renderSummary(found, true); return false; }
      this.sumWrap.replaceChildren();
      return true;
    }

    serverErrors(fields) {
      const s = this.s;
      s.errors = {};
      for (const [p, m] of Object.entries(fields)) if (typeof m === 'string') s.errors[p] = m;
      const steps = Object.keys(s.errors).map((p) => this.stepOf(p)).filter(Boolean)
        .sort((a, b) => STEP_ORDER.indexOf(a) - STEP_ORDER.indexOf(b));
      if (steps.length && steps[0] !== s.step) this.go(steps[0], { focus: false, keepSummary: true });
      else this.allPaths().forEach((p) => this.paint(p));
      this.renderSummary(s.errors, true);
    }

    renderSummary(errors, focus) {
      const order = this.allPaths();
      const rank = (p) => (order.includes(p) ? order.indexOf(p) : order.length);
      const items = Object.entries(errors).sort((a, b) => rank(a[0]) - rank(b[0]));
      const box = h('div', { class: 'cw-summary', tabindex: '-1', 'aria-labelledby': 'cw-sum-h' },
        h('h3', { id: 'cw-sum-h' }, this.L.summary),
        h('ul', {}, items.map(([p, m]) => h('li', { 'data-path': p },
          this.def(p) ? h('a', { href: '#' + this.def(p)[1], onclick: (e) => { e.preventDefault(); this.focusField(p); } }, m) : m))));
      this.sumWrap.replaceChildren(box);
      if (focus) box.focus();
    }

    focusField(path) {
      const step = this.stepOf(path);
      if (step !== this.s.step) this.go(step, { focus: false, keepSummary: true });
      let el = this.$(this.def(path)[1]);
      if (el && el.tagName === 'FIELDSET') el = el.querySelector('input:checked') || el.querySelector('input');
      if (el) el.focus();
    }

    // ------------------------------------------------------------ step 1: states
    v_zone() {
      const L = this.L;
      const s = this.s;
      const options = (sel) => [h('option', { value: '' }, L.chooseState),
        this.zones.map((z) => h('option', { value: z.code, selected: z.code === sel }, z.name))];
      const main = h('select', { class: 'cw-input', onchange: (e) => {
        s.zone = e.target.value;
        s.extras = s.extras.filter((c) => c !== s.zone);
        const note = this.$('cw-zone-note');
        if (note) note.hidden = true;
        this.checkNoTax(s.zone);
        this.fix('zones');
        this.drawChips();
      } }, options(s.zone));
      const extra = h('select', { class: 'cw-input' }, options(''));
      const addBtn = h('button', {
        type: 'button', class: 'cw-btn cw-link cw-add', 'aria-expanded': String(s.picking), 'aria-controls': 'cw-picker',
        onclick: () => {
          s.picking = !s.picking;
          addBtn.setAttribute('aria-expanded', String(s.picking));
          this.$('cw-picker').hidden = !s.picking;
          if (s.picking) extra.focus();
        },
      }, L.addState);
      const add = () => {
        const code = extra.value;
        if (!code) { this.say(L.pickFirst); extra.focus(); return; }
        const name = this.zoneName(code);
        if (code === s.zone || s.extras.includes(code)) { this.say(fmt(L.already, { name })); return; }
        if (this.checkNoTax(code)) return;
        s.extras.push(code);
        extra.value = '';
        this.fix('zones');
        this.drawChips();
        this.say(fmt(L.added, { name }));
      };
      return this.form([
        this.heading(L.zoneHeading),
        h('p', { class: 'cw-muted' }, L.zoneIntro),
        this.field('cw-zone', L.zoneLabel, main),
        h('p', { class: 'cw-note', id: 'cw-zone-note', hidden: true }),
        h('div', { id: 'cw-chips' }),
        addBtn,
        h('div', { class: 'cw-picker', id: 'cw-picker', hidden: !s.picking },
          this.field('cw-zone-extra', L.anotherState, extra),
          this.btn(L.add, add)),
      ], [this.primary(L.cont)], () => this.afterZones());
    }

    // With only no-sales-tax states chosen there is nothing to continue to.
    syncZone() {
      const next = this.s.step === 'zone' && this.view.querySelector('.cw-primary');
      if (next) next.hidden = !this.chosen().length && !!this.s.zone && !this.taxable(this.s.zone);
    }

    drawChips() {
      const wrap = this.$('cw-chips');
      if (!wrap) return;
      const s = this.s;
      const L = this.L;
      this.syncZone();
      if (!s.extras.length) { wrap.replaceChildren(); return; }
      wrap.replaceChildren(h('p', { class: 'cw-hint', id: 'cw-chips-label' }, L.alsoFor),
        h('ul', { class: 'cw-chips', 'aria-labelledby': 'cw-chips-label' }, s.extras.map((code, i) => {
          const name = this.zoneName(code);
          return h('li', { class: 'cw-chip' }, h('span', {}, name),
            h('button', { type: 'button', class: 'cw-chip-x', 'aria-label': fmt(L.remove, { name }), onclick: () => {
              s.extras.splice(i, 1);
              this.drawChips();
              this.say(fmt(L.removed, { name }));
              const next = wrap.querySelectorAll('.cw-chip-x')[Math.min(i, s.extras.length - 1)];
              (next || this.$('cw-zone')).focus();
            } }, h('span', { 'aria-hidden': 'true' }, '×')));
        })));
    }

    async afterZones() {
      if (!this.validate('zone')) return;
      const s = this.s;
      const zones = this.chosen();
      this.setBusy(null, this.L.loading);
      let data;
      try {
        [{ data }] = await Promise.all([this.req('GET', '/certificates', { auth: true }), this.loadForms(zones)]);
      } catch (e) {
        this.fail(e, () => this.afterZones());
        return;
      }
      this.setBusy(null);
      const today = new Date().toISOString().slice(0, 10);
      s.certs = (Array.isArray(data.certificates) ? data.certificates : []).filter((c) => c && zones.includes(c.zone) &&
        !DEAD_STATUSES.includes(String(c.status || '').toLowerCase()) && (!c.expirationDate || c.expirationDate >= today));
      if (s.certs.length) this.go('onfile'); else this.choose();
    }

    // ------------------------------------------------------------ step 2: certificates on file
    v_onfile() {
      const L = this.L;
      return this.form([
        this.heading(L.onfileHeading),
        h('p', { class: 'cw-muted' }, L.onfileIntro),
        h('ul', { class: 'cw-certs' }, this.s.certs.map((c, i) => {
          const id = 'cw-cert-' + i;
          const exp = c.expirationDate ? fmt(c.expiresSoon ? L.expiresSoon : L.expires, { date: dateText(c.expirationDate, this.lang) }) : L.noExpiry;
          return h('li', { class: 'cw-cert' },
            h('div', { id },
              h('p', { class: 'cw-cert-name' }, c.reasonName || c.reason || ''),
              h('p', {}, fmt(L.certNo, { number: c.number || c.id, state: this.zoneName(c.zone) })),
              c.exemptionNumber ? h('p', { class: 'cw-muted' }, fmt(L.permitNo, { number: c.exemptionNumber })) : null,
              h('p', { class: c.expiresSoon ? 'cw-warn' : 'cw-muted' }, exp)),
            h('div', { class: 'cw-actions' },
              h('button', { type: 'button', class: 'cw-btn cw-primary', 'aria-describedby': id, onclick: (e) => { if (!this.s.busy) this.useCert(c, e.currentTarget); } }, L.useCert),
              c.expiresSoon ? h('button', { type: 'button', class: 'cw-btn', 'aria-describedby': id, onclick: () => { if (!this.s.busy) this.renew(c); } }, L.renew) : null));
        })),
      ], [this.backBtn(), this.btn(L.newCert, () => this.choose()), this.cancelBtn()], () => {});
    }

    async useCert(cert, btn) {
      this.setBusy(btn, this.L.submitting);
      let res;
      try {
        res = await this.req('POST', `/certificates/${encodeURIComponent(cert.id)}/use`, { auth: true });
      } catch (e) {
        this.fail(e, () => this.useCert(cert, btn), true);
        return;
      }
      this.succeed({ certificate: cert, exemptions: res.data.exemptions || [] }, 'use', res.status);
    }

    // Everything the old certificate (and the submission it came from) said, but the signature.
    renew(cert) {
      const s = this.s;
      s.reason = cert.reason || '';
      s.number = cert.exemptionNumber || '';
      if (cert.zone && cert.exemptionNumber) s.numbers[cert.zone] = cert.exemptionNumber;
      const pre = cert.prefill && typeof cert.prefill === 'object' ? cert.prefill : {};
      if (pre.purchaser && typeof pre.purchaser === 'object') {
        for (const [k] of PURCHASER) {
          if (typeof pre.purchaser[k] === 'string' && pre.purchaser[k] && !s.locked.has(k)) s.purchaser[k] = pre.purchaser[k];
        }
      }
      if (TAX_IDS.includes(pre.taxIdType)) s.taxIdType = pre.taxIdType;
      if (pre.exemptionNumbers && typeof pre.exemptionNumbers === 'object') Object.assign(s.numbers, pre.exemptionNumbers);
      if (pre.businessTypes && typeof pre.businessTypes === 'object') Object.assign(s.businessTypes, pre.businessTypes);
      for (const k of ['businessDescription', 'propertyDescription', 'signerTitle']) if (typeof pre[k] === 'string') s[k] = pre[k];
      this.choose(true);
    }

    // ------------------------------------------------------------ step 3: fill in or upload
    choose(renewing) {
      const o = this.o;
      const fill = isTrue(o.fillOnly);
      const upload = isTrue(o.uploadOnly);
      if (upload && !fill) { this.s.mode = 'upload'; this.startForm(); }
      else if (!this.fillable()) { this.s.mode = 'upload'; this.go('choice'); } // says why, offers upload
      else if ((fill && !upload) || renewing) { this.s.mode = 'fill'; this.startForm(); }
      else this.go('choice');
    }

    v_choice() {
      const L = this.L;
      const s = this.s;
      const pick = (e) => { s.mode = e.target.value; };
      const fillable = this.fillable();
      // No form of some chosen state is modelled (GenCert's upload_form_unavailable): say so.
      const notes = fillable ? [] : [fmt(L.uploadOnlyNote, { states: this.stateList() })]
        .concat(this.chosen().map((z) => this.zoneForms(z)).filter((z) => z.uploadOnly && z.note).map((z) => z.note));
      return this.form([
        h('fieldset', { class: 'cw-group' },
          h('legend', {}, this.heading(L.choiceHeading)),
          notes.length ? h('div', { class: 'cw-note', id: 'cw-upload-only' }, notes.map((n) => h('p', {}, n))) : null,
          fillable ? this.radio('cw-mode', 'fill', L.choiceFill, s.mode === 'fill', pick, L.choiceFillHint) : null,
          this.radio('cw-mode', 'upload', L.choiceUpload, s.mode === 'upload' || !fillable, pick, L.fileKinds)),
      ], [this.backBtn(), this.primary(L.cont), this.cancelBtn()], () => {
        if (!fillable) s.mode = 'upload';
        this.startForm();
      });
    }

    async startForm() {
      const s = this.s;
      const zones = this.chosen();
      if (s.mode !== 'upload') {
        // Only what the chosen states' forms accept (GET /forms, loaded with the states).
        this.reasons = this.fillReasons();
        if (s.reason && !this.reasons.some((r) => r.code === s.reason)) s.reason = '';
        this.go('fill');
        return;
      }
      this.setBusy(null, this.L.loading);
      try {
        await Promise.all(zones.filter((z) => !this.rcache.has(z)).map(async (z) => {
          const { data } = await this.req('GET', '/reasons?zone=' + encodeURIComponent(z));
          this.rcache.set(z, Array.isArray(data.reasons) ? data.reasons : []);
        }));
      } catch (e) {
        this.fail(e, () => this.startForm());
        return;
      }
      this.setBusy(null);
      let list = this.rcache.get(zones[0]) || [];
      for (const z of zones.slice(1)) {
        const codes = new Set((this.rcache.get(z) || []).map((r) => r.code));
        list = list.filter((r) => codes.has(r.code));
      }
      this.reasons = list;
      if (s.reason && !list.some((r) => r.code === s.reason)) s.reason = '';
      this.go(s.mode === 'upload' ? 'upload' : 'fill');
    }

    // ------------------------------------------------------------ step 4: fill in
    v_fill() {
      const L = this.L;
      const s = this.s;
      const locked = s.locked;
      const fields = PURCHASER.map(([k, auto, req]) => {
        const ctl = this.input(s.purchaser[k], (e) => { s.purchaser[k] = e.target.value; this.fix('purchaser.' + k); }, {
          autocomplete: auto, type: k === 'email' ? 'email' : 'text', readonly: locked.has(k), required: req && !locked.has(k),
        });
        return h('div', { class: 'cw-col-' + k }, this.field('cw-p-' + k, L['p_' + k], ctl, { optional: !req }));
      });
      return this.form([
        this.heading(L.fillHeading),
        h('p', { class: 'cw-muted' }, fmt(L.forStates, { states: this.stateList() })),
        h('fieldset', { class: 'cw-group' },
          h('legend', {}, L.purchaser),
          locked.size ? h('p', { class: 'cw-hint' }, L.fromAccount) : null,
          h('div', { class: 'cw-grid' }, fields)),
        this.numberFields(),
      ], [this.backBtn(), this.primary(L.cont), this.cancelBtn()], () => {
        if (this.validate('fill')) this.go('sign');
      });
    }

    // ------------------------------------------------------------ step 5: sign
    v_sign() {
      const L = this.L;
      const s = this.s;
      const preview = this.o.preview === undefined ? true : isTrue(this.o.preview);
      const pad = this.signaturePad();
      const typedPreview = h('p', { class: 'cw-typed', 'aria-hidden': 'true' }, s.typed);
      const drawPanel = h('div', { class: 'cw-panel', hidden: s.sigMode !== 'draw' },
        h('p', { class: 'cw-hint', id: 'cw-pad-help' }, L.padHelp),
        pad,
        this.btn(L.clear, () => {
          s.strokes = [];
          s.sigImage = '';
          this.redraw();
          this.say(L.cleared);
        }));
      const typePanel = h('div', { class: 'cw-panel', hidden: s.sigMode !== 'type' },
        this.field('cw-sig-name', L.typed, this.input(s.typed, (e) => {
          s.typed = e.target.value;
          typedPreview.textContent = s.typed;
          this.fix('signature.name');
        }, { autocomplete: 'name', spellcheck: 'false' })),
        typedPreview);
      const switchMode = (e) => {
        s.sigMode = e.target.value;
        drawPanel.hidden = s.sigMode !== 'draw';
        typePanel.hidden = s.sigMode !== 'type';
        delete s.errors.signature; delete s.errors['signature.image']; delete s.errors['signature.name'];
        this.paint('signature'); this.paint('signature.name');
      };
      const title = this.asks('title') ? this.field('cw-signer-title', L.signerTitle, this.input(s.signerTitle, (e) => {
        s.signerTitle = e.target.value;
        this.fix('signerTitle');
      }, { autocomplete: 'organization-title' }), { hint: L.signerTitleHint }) : null;
      return this.form([
        this.heading(L.signHeading),
        title,
        this.group('cw-sig', L.signMethod, [
          h('div', { class: 'cw-inline' },
            this.radio('cw-sigmode', 'draw', L.draw, s.sigMode === 'draw', switchMode),
            this.radio('cw-sigmode', 'type', L.type, s.sigMode === 'type', switchMode)),
          drawPanel, typePanel]),
        h('div', { class: 'cw-check' },
          h('input', { type: 'checkbox', id: 'cw-attest', checked: s.attest, required: true, onchange: (e) => { s.attest = e.target.checked; this.fix('attest'); } }),
          h('label', { for: 'cw-attest' }, L.attest),
          h('p', { class: 'cw-err', id: 'cw-attest-error', hidden: true })),
      ], [this.backBtn(), this.primary(preview ? L.cont : L.submit), this.cancelBtn()], () => {
        if (!this.validate('sign')) return;
        if (s.sigMode === 'draw' && this.canvas) {
          const r = this.canvas.getBoundingClientRect();
          s.padSize = [r.width, r.height];
          s.sigImage = this.canvas.toDataURL('image/png');
        } else s.sigImage = '';
        if (preview) this.go('preview'); else this.submitFilled();
      });
    }

    signaturePad() {
      const s = this.s;
      const canvas = h('canvas', { class: 'cw-pad', role: 'img', 'aria-label': this.L.pad, 'aria-describedby': 'cw-pad-help' });
      const ctx = canvas.getContext('2d');
      this.canvas = canvas;
      this.ctx = ctx;
      let stroke = null;
      const point = (e) => {
        const r = canvas.getBoundingClientRect();
        return [Math.round((e.clientX - r.left) * 10) / 10, Math.round((e.clientY - r.top) * 10) / 10];
      };
      const down = (e) => {
        if (e.pointerType === 'mouse' && e.button !== 0) return;
        e.preventDefault();
        try { canvas.setPointerCapture(e.pointerId); } catch (err) { /* pointer already gone */ }
        stroke = { w: canvas.getBoundingClientRect().width, pts: [point(e)] };
        s.strokes.push(stroke);
        this.redraw();
      };
      const move = (e) => {
        if (!stroke) return;
        e.preventDefault();
        const evs = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
        (evs.length ? evs : [e]).forEach((ev) => stroke.pts.push(point(ev)));
        this.redraw();
      };
      const up = () => {
        if (!stroke) return;
        stroke = null;
        this.fix('signature');
      };
      canvas.addEventListener('pointerdown', down);
      canvas.addEventListener('pointermove', move);
      canvas.addEventListener('pointerup', up);
      canvas.addEventListener('pointercancel', up);
      canvas.addEventListener('lostpointercapture', up);
      const fit = () => {
        const r = canvas.getBoundingClientRect();
        if (!r.width) return;
        const dpr = window.devicePixelRatio || 1; // keep strokes sharp on high-DPI screens
        canvas.width = Math.round(r.width * dpr);
        canvas.height = Math.round(r.height * dpr);
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        this.redraw();
      };
      if (typeof ResizeObserver === 'function') {
        const ro = new ResizeObserver(fit);
        ro.observe(canvas);
        this.undo.push(() => ro.disconnect());
      } else {
        window.addEventListener('resize', fit);
        this.undo.push(() => window.removeEventListener('resize', fit));
      }
      this.undo.push(() => { this.canvas = null; this.ctx = null; });
      return canvas;
    }

    redraw() {
      if (this.canvas && this.ctx) this.drawStrokes(this.canvas, this.ctx, this.canvas.getBoundingClientRect().width);
    }

    // The preview redraws the strokes instead of showing the PNG: a shop's CSP may block data: images.
    sigCopy() {
      const [w, ht] = this.s.padSize || [320, 160];
      const canvas = h('canvas', { class: 'cw-sig-img', role: 'img', 'aria-label': this.L.drawnAlt });
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(ht * dpr);
      const ctx = canvas.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      this.drawStrokes(canvas, ctx, w);
      return canvas;
    }

    drawStrokes(canvas, ctx, w) {
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.restore();
      ctx.lineWidth = 2.25;
      ctx.lineCap = 'round';
      ctx.lineJoin = 'round';
      ctx.strokeStyle = '#111';
      ctx.fillStyle = '#111';
      for (const st of this.s.strokes) {
        const k = st.w && w ? w / st.w : 1;
        const pts = st.pts;
        if (pts.length === 1) {
          ctx.beginPath();
          ctx.arc(pts[0][0] * k, pts[0][1] * k, 1.6, 0, Math.PI * 2);
          ctx.fill();
          continue;
        }
        ctx.beginPath();
        ctx.moveTo(pts[0][0] * k, pts[0][1] * k);
        for (let i = 1; i < pts.length - 1; i++) {
          const mx = (pts[i][0] + pts[i + 1][0]) / 2;
          const my = (pts[i][1] + pts[i + 1][1]) / 2;
          ctx.quadraticCurveTo(pts[i][0] * k, pts[i][1] * k, mx * k, my * k);
        }
        const last = pts[pts.length - 1];
        ctx.lineTo(last[0] * k, last[1] * k);
        ctx.stroke();
      }
    }

    // ------------------------------------------------------------ step 6: preview, submit
    body() {
      const s = this.s;
      const purchaser = {};
      for (const [k] of PURCHASER) purchaser[k] = (s.purchaser[k] || '').trim();
      const zones = this.chosen();
      const forms = {};
      this.formGroups().forEach((g) => g.zones.forEach((z) => { forms[z] = g.form.id; }));
      const per = this.perState();
      const numbers = {};
      if (per) zones.forEach((z) => { const v = String(s.numbers[z] || '').trim(); if (v) numbers[z] = v; });
      const body = {
        zones, reason: s.reason, forms, exemptionNumber: per ? '' : s.number.trim(),
        ...(per ? { exemptionNumbers: numbers } : {}),
        taxIdType: s.taxIdType, purchaser,
      };
      const bts = this.btForms();
      if (bts.length === 1) body.businessType = s.businessTypes[bts[0].id] || '';
      else if (bts.length > 1) body.businessType = Object.fromEntries(bts.map((f) => [f.id, s.businessTypes[f.id] || '']));
      if (this.asks('business_description')) body.businessDescription = s.businessDescription.trim();
      if (this.asks('property_description')) body.propertyDescription = s.propertyDescription.trim();
      if (this.asks('title')) body.signerTitle = s.signerTitle.trim();
      // The shop names the order a single purchase is for (its order_reference option).
      body.purchaseKind = this.purchaseKind();
      return Object.assign(body, {
        signature: s.sigMode === 'draw' ? { type: 'drawn', image: s.sigImage } : { type: 'typed', name: s.typed.trim() },
        attest: s.attest === true,
        expirationDate: this.fixedExpiry().length && s.expirationDate ? s.expirationDate : null,
        exemptPercentage: 100,
      });
    }

    // One Idempotency-Key per attempt-set: reused while the body is unchanged (retries), new once it changes.
    keyFor(fingerprint) {
      const s = this.s;
      if (!s.idem || s.idem.fp !== fingerprint) s.idem = { fp: fingerprint, key: uuid() };
      return s.idem.key;
    }

    // One summary per document the buyer signs (GA + TX: the SST certificate and the 01-339),
    // each with its title and number, the seller and when it expires; one signature below.
    v_preview() {
      const L = this.L;
      const s = this.s;
      const p = s.purchaser;
      const r = this.reasonObj();
      const row = (label, ...value) => [h('dt', {}, label), h('dd', {}, value)];
      const line = (text) => h('span', { class: 'cw-line' }, text);
      // Made afresh for each card: a node appended twice would move to the last card.
      const address = () => [p.name, p.line1, [p.city, p.region, p.postalCode].filter(Boolean).join(', '), p.country, p.email]
        .filter((x) => x && x.trim()).map(line);
      const seller = this.policy && this.policy.seller;
      const sellerLines = () => (seller ? [seller.name, seller.address].filter(Boolean).map(line) : L.noSeller);
      const groups = this.formGroups();
      const many = this.chosen().length > 1;
      const numberLines = (zones) => (this.perState()
        ? zones.map((z) => line(`${this.zoneName(z)}: ${String(s.numbers[z] || '').trim() || '—'}`))
        : [line(s.number.trim() || '—')]);
      const expiryText = (form, zone) => {
        const ex = this.expiryOf(form, zone);
        if (ex.kind === 'fixed_date') return fmt(L.expiryPrinted, { date: dateText(s.expirationDate, this.lang) });
        return ex.date ? fmt(L.expires, { date: dateText(ex.date, this.lang) }) : L.noExpiry;
      };
      const ref = s.orderRef || L.thisOrder;
      const cards = groups.map((g, i) => {
        const f = g.form;
        const bt = (f.businessTypes || []).find((b) => b.code === s.businessTypes[f.id]);
        const asks = (field) => (f.asks || []).includes(field);
        return h('section', { class: 'cw-formcard', 'aria-labelledby': 'cw-form-' + i },
          h('h4', { id: 'cw-form-' + i, class: 'cw-formtitle' }, f.title),
          h('p', { class: 'cw-muted' }, fmt(L.issuedBy, { number: f.number, issuer: f.issuer })),
          h('dl', { class: 'cw-dl' },
            row(L.states, this.stateList(g.zones)),
            row(L.seller, sellerLines()),
            row(L.purchaser, address()),
            bt ? row(L.businessType, bt.label) : null,
            asks('business_description') && s.businessDescription.trim() ? row(L.bdesc, s.businessDescription.trim()) : null,
            asks('property_description') && s.propertyDescription.trim() ? row(L.pdesc, s.propertyDescription.trim()) : null,
            row(L.reason, (g.zones.map((z) => (this.zoneForms(z).reasons || []).find((x) => x.code === s.reason)).find(Boolean) || {}).label || (r ? r.name : s.reason)),
            row(L.number, numberLines(g.zones)),
            row(L.taxIdType, L['tax_' + s.taxIdType] || s.taxIdType),
            row(L.covers, this.purchaseKind() === 'single' ? fmt(L.coversSingle, { ref }) : L.coversBlanket),
            row(L.expiry, g.zones.map((z) => line(many ? `${this.zoneName(z)}: ${expiryText(f, z)}` : expiryText(f, z))))));
      });
      const sig = s.sigMode === 'draw' ? this.sigCopy() : h('span', { class: 'cw-typed' }, s.typed.trim());
      const review = this.policy && !this.policy.exemptOnSubmit;
      return this.form([
        this.heading(L.previewHeading),
        h('p', { class: 'cw-muted' }, groups.length > 1 ? fmt(L.previewIntroMany, { n: groups.length }) : L.previewIntro),
        review ? h('p', { class: 'cw-note' }, L.reviewPolicy) : null,
        cards,
        h('dl', { class: 'cw-dl' },
          this.asks('title') ? row(L.signerTitleRow, s.signerTitle.trim()) : null,
          row(L.signed, dateText(new Date().toISOString().slice(0, 10), this.lang)),
          row(L.signature, sig)),
      ], [this.btn(L.edit, () => this.go('fill')), this.primary(L.submit), this.cancelBtn()], () => this.submitFilled());
    }

    async submitFilled() {
      const body = this.body();
      const key = this.keyFor(JSON.stringify(body));
      this.setBusy(null, this.L.submitting);
      let res;
      try {
        res = await this.req('POST', '/certificates', { auth: true, json: body, key });
      } catch (e) {
        this.fail(e, () => this.submitFilled(), true);
        return;
      }
      this.succeed(res.data, 'filled', res.status);
    }

    // ------------------------------------------------------------ upload
    v_upload() {
      const L = this.L;
      const s = this.s;
      const file = h('input', { type: 'file', class: 'cw-file', accept: ACCEPT, required: true, onchange: (e) => {
        s.file = (e.target.files && e.target.files[0]) || null;
        const msg = this.problemFor('file');
        if (msg) s.errors.file = msg; else { delete s.errors.file; this.dropSummaryItem('file'); }
        this.paint('file');
        const note = this.$('cw-file-note');
        if (note) note.hidden = true;
      } });
      return this.form([
        this.heading(L.uploadHeading),
        h('p', { class: 'cw-muted' }, fmt(L.forStates, { states: this.stateList() })),
        this.numberFields(),
        this.field('cw-file', L.file, file, { hint: L.fileKinds }),
        s.file ? h('p', { class: 'cw-hint', id: 'cw-file-note' }, fmt(L.selected, { name: s.file.name, size: mb(s.file.size) })) : null,
      ], [this.backBtn(), this.primary(L.upload), this.cancelBtn()], () => this.submitUpload());
    }

    async submitUpload() {
      if (!this.validate('upload')) return;
      const s = this.s;
      const f = s.file;
      const zones = this.chosen();
      const form = new FormData();
      zones.forEach((z) => form.append('zones', z));
      form.append('reason', s.reason);
      form.append('exemptionNumber', s.number.trim());
      form.append('file', f, f.name);
      const key = this.keyFor(JSON.stringify([zones, s.reason, s.number.trim(), f.name, f.size, f.lastModified]));
      this.setBusy(null, this.L.submitting);
      let res;
      try {
        res = await this.req('POST', '/certificates', { auth: true, form, key, timeout: UPLOAD_TIMEOUT });
      } catch (e) {
        this.fail(e, () => this.submitUpload(), true);
        return;
      }
      this.succeed(res.data, 'upload', res.status);
    }

    // ------------------------------------------------------------ the end
    succeed(data, kind, status) {
      const s = this.s;
      this.setBusy(null);
      if (data && data.notNeeded) {
        const zones = Array.isArray(data.zones) ? data.zones : this.chosen();
        this.reset(true);
        zones.forEach((z) => this.checkNoTax(z));
        return;
      }
      s.result = { data, kind, status };
      s.errors = {};
      s.idem = null;
      this.go('done');
      if (kind === 'upload') this.emit('upload', data, 'onUpload');
      this.emit('success', data, 'onCertSuccess');
    }

    v_done() {
      const L = this.L;
      const { data, kind, status } = this.s.result;
      const sub = data.submission || {};
      const ex = Array.isArray(data.exemptions) ? data.exemptions : [];
      let zones = Array.isArray(sub.zones) && sub.zones.length ? sub.zones : ex.map((x) => x.zone).filter(Boolean);
      if (!zones.length) zones = kind === 'use' && data.certificate ? [data.certificate.zone] : this.chosen();
      zones = zones.filter((z, i, a) => a.indexOf(z) === i);
      const pending = status === 202 || sub.status === 'pending';
      // The shop exempts only approved certificates (exempt_on_submit=False): say so.
      const review = kind !== 'use' && ex.some((x) => x && x.awaitingReview);
      return h('div', { class: 'cw-done' },
        this.heading(kind === 'use' ? L.appliedHeading : L.doneHeading),
        h('p', {}, fmt(kind === 'use' ? L.applied : review ? L.doneReview : L.done, { states: this.stateList(zones) })),
        pending ? h('p', { class: 'cw-muted' }, L.pending) : null,
        h('div', { class: 'cw-actions' },
          this.copies(data, kind).map((c) => this.btn(c.label, (e) => this.download(c.path, e.currentTarget))),
          this.account ? this.btn(L.backToAccount, () => this.reset(true)) : null));
    }

    // The buyer's own copy of what was just signed or uploaded (signed-in buyers only: the
    // server refuses guests): one per form when the states took different forms.
    copies(data, kind) {
      if (!this.signedIn) return [];
      const L = this.L;
      const enc = encodeURIComponent;
      const sub = data.submission || {};
      if (kind === 'use') {
        const cert = data.certificate;
        return cert && cert.id ? [{ path: `/certificates/${enc(cert.id)}/document`, label: L.download }] : [];
      }
      if (!sub.id) return [];
      const groups = kind === 'filled' ? this.formGroups() : [];
      if (groups.length > 1) {
        return groups.map((g) => ({
          path: `/submissions/${enc(sub.id)}/document?zone=${enc(g.zones[0])}`,
          label: fmt(L.downloadFor, { states: this.stateList(g.zones) }),
        }));
      }
      return [{ path: `/submissions/${enc(sub.id)}/document`, label: L.download }];
    }

    // Fetched with the widget token (never a URL that history, logs or a Referer could leak),
    // then saved from a blob.
    async download(path, btn) {
      const L = this.L;
      const gen = this.gen;
      this.clearProblem();
      this.setBusy(btn, L.downloading);
      try {
        let res;
        for (let attempt = 0; ; attempt++) {
          await this.ensureToken();
          if (this.dead || gen !== this.gen) return;
          const ac = new AbortController();
          this.ctl.add(ac);
          const timer = setTimeout(() => ac.abort(), UPLOAD_TIMEOUT);
          try {
            res = await fetch(this.ep + path, {
              headers: { Authorization: 'Bearer ' + this.s.token, Accept: 'application/pdf, image/*, application/json' },
              credentials: 'same-origin', signal: ac.signal,
            });
          } catch (e) {
            throw { net: true, status: 0, code: 'network', message: '' };
          } finally {
            clearTimeout(timer);
            this.ctl.delete(ac);
          }
          if (res.status === 401 && attempt === 0) { this.s.token = null; continue; } // token expired: once more
          break;
        }
        if (this.dead || gen !== this.gen) return;
        if (!res.ok) {
          let data = null;
          try { data = await res.json(); } catch (e) { data = null; }
          const err = (data && data.error) || {};
          throw { net: res.status >= 500, status: res.status, code: err.code || 'http_' + res.status, message: err.message || '' };
        }
        const blob = await res.blob();
        const m = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '');
        const name = m ? m[1] : 'certificate.pdf';
        const url = URL.createObjectURL(blob);
        const a = h('a', { href: url, download: name, hidden: true });
        this.root.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        this.setBusy(null);
        this.say(fmt(L.downloaded, { name }));
      } catch (e) {
        this.fail(e, () => this.download(path, btn));
      }
    }

    // ------------------------------------------------------------ the account view
    async loadAccount(focus) {
      const s = this.s;
      s.zone = '';
      s.extras = [];
      s.hist = [];
      if (this.signedIn) {
        this.view.replaceChildren(h('p', { class: 'cw-muted' }, this.L.loading));
        let data;
        try {
          ({ data } = await this.req('GET', '/certificates?view=account', { auth: true }));
        } catch (e) {
          this.fail(e, () => this.loadAccount(focus));
          return;
        }
        s.account = (Array.isArray(data.certificates) ? data.certificates : []).filter((c) => c && c.zone);
      }
      this.go('account', { push: false, focus });
    }

    v_account() {
      const L = this.L;
      if (!this.signedIn) return h('div', { class: 'cw-account' }, this.heading(L.accountHeading), h('p', {}, L.signInToSee));
      const list = this.s.account || [];
      return h('div', { class: 'cw-account' },
        this.heading(L.accountHeading),
        h('p', { class: list.length ? 'cw-muted' : null }, list.length ? L.accountIntro : L.accountEmpty),
        list.length ? h('ul', { class: 'cw-certs' }, list.map((c, i) => this.accountItem(c, i))) : null);
    }

    accountItem(c, i) {
      const L = this.L;
      const id = 'cw-acct-' + i;
      const status = L['st_' + c.status] || String(c.status || '');
      const date = c.expirationDate ? dateText(c.expirationDate, this.lang) : '';
      const exp = !c.expirationDate ? L.noExpiry : fmt(c.expired ? L.expired : c.expiresSoon ? L.expiresSoon : L.expires, { date });
      const state = this.zoneName(c.zone);
      const tone = /^(active)$/i.test(c.status) ? 'ok' : /^(expired|revoked)$/i.test(c.status) ? 'bad' : 'wait';
      return h('li', { class: 'cw-cert' },
        h('div', { id },
          h('p', { class: 'cw-cert-name' }, c.reasonName || c.reason || ''),
          h('p', {}, c.number || c.id ? fmt(L.certNo, { number: c.number || c.id, state }) : state),
          c.exemptionNumber ? h('p', { class: 'cw-muted' }, fmt(L.permitNo, { number: c.exemptionNumber })) : null,
          h('p', {}, h('span', { class: 'cw-status cw-status-' + tone }, fmt(L.statusLabel, { status }))),
          h('p', { class: c.expired || c.expiresSoon ? 'cw-warn' : 'cw-muted' }, exp),
          c.single ? h('p', { class: 'cw-muted' }, L.singleNote) : null),
        h('div', { class: 'cw-actions' },
          typeof c.document === 'string' && c.document.startsWith('/')
            ? h('button', { type: 'button', class: 'cw-btn', 'aria-describedby': id, onclick: (e) => { if (!this.s.busy) this.download(c.document, e.currentTarget); } }, L.download)
            : null,
          c.renewable
            ? h('button', { type: 'button', class: 'cw-btn cw-primary', 'aria-describedby': id, onclick: (e) => { if (!this.s.busy) this.renewFrom(c, e.currentTarget); } }, L.renew)
            : null));
    }

    // Renew opens the normal flow for the certificate's state, prefilled as at checkout; Back
    // returns to the list.
    async renewFrom(cert, btn) {
      const s = this.s;
      s.zone = cert.zone;
      s.extras = [];
      this.setBusy(btn, this.L.loading);
      try {
        await this.loadForms([cert.zone]);
      } catch (e) {
        this.fail(e, () => this.renewFrom(cert, btn));
        return;
      }
      this.setBusy(null);
      this.renew(cert);
    }
  }

  // ---------------------------------------------------------------- mounting and the public API
  function fromData(el) {
    const d = el.dataset;
    const o = {};
    if ('shipZone' in d) o.shipZone = d.shipZone || null;
    if (d.locale) o.locale = d.locale;
    if ('fillOnly' in d) o.fillOnly = d.fillOnly === '' || isTrue(d.fillOnly);
    if ('uploadOnly' in d) o.uploadOnly = d.uploadOnly === '' || isTrue(d.uploadOnly);
    if ('preview' in d) o.preview = d.preview === '' || isTrue(d.preview);
    if ('editPurchaser' in d) o.editPurchaser = d.editPurchaser === '' || isTrue(d.editPurchaser);
    if (d.theme) o.theme = d.theme;
    if (d.view) o.view = d.view;
    if ('title' in d) o.title = d.title === 'false' ? false : d.title;
    return o;
  }

  // True once the page's own script has mounted a widget: from then on the middleware's default
  // mount is not wanted (it would be a second widget), as when the page has a placeholder.
  let placedByPage = false;

  function mount(host, options) {
    const old = instances.get(host);
    if (old) old.destroy();
    const w = new Widget(host, Object.assign({}, readConfig(), options || {}));
    instances.set(host, w);
    return w.api;
  }

  function init(element, options) {
    const host = typeof element === 'string' ? document.querySelector(element) : element;
    if (!host || !(host instanceof Element)) throw new TypeError('CertWidget.init needs an element');
    if (!host.hasAttribute('data-certwidget-default')) {
      placedByPage = true;
      dropDefaultMounts();
    }
    if (document.readyState === 'loading' && !document.getElementById('certwidget-config')) {
      // Called before the page is parsed, by a page that loads this script itself: the config
      // the middleware injects (endpoint, locale) comes at the end of the body. Mount once it
      // is there; the handle forwards to that widget.
      let api = null;
      let dropped = false;
      document.addEventListener('DOMContentLoaded', () => {
        if (!dropped) api = mount(host, options);
      }, { once: true });
      return {
        element: host,
        version: VERSION,
        destroy: () => { dropped = true; if (api) api.destroy(); },
        reset: () => { if (api) api.reset(); },
      };
    }
    return mount(host, options);
  }

  function dropDefaultMounts() {
    // A widget already running there goes too: the page chose where the widget belongs.
    document.querySelectorAll('[data-certwidget-default]').forEach((el) => {
      const w = instances.get(el);
      if (w) w.destroy();
      el.remove();
    });
  }

  function boot() {
    const cfg = readConfig();
    const mounts = Array.from(document.querySelectorAll('[data-certwidget]'));
    // The middleware adds a default mount before </body> without reading the page; the shop's
    // own placeholders, or a widget its script placed already, take its place.
    const placed = mounts.filter((el) => !el.hasAttribute('data-certwidget-default'));
    if (placed.length || placedByPage) dropDefaultMounts();
    (placed.length ? placed : placedByPage ? [] : mounts).forEach((el) => {
      if (!instances.has(el)) mount(el, Object.assign({}, cfg, fromData(el)));
    });
  }

  window.CertWidget = Object.freeze({ init, version: VERSION });
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot, { once: true });
  else boot();
})();
