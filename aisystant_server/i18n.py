"""Human messages in French (the original product's language) or English.

`code`s are stable and English; only the human `message` follows `Accept-Language`.
Our own texts live in `CATALOG`; colander's built-in validation messages come
translated from colander's own catalogs.
"""

from translationstring import TranslationString

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"

CATALOG = {
    # errors
    "not_found": ("Ressource introuvable.", "Not found."),
    "conversation_not_found": ("Conversation introuvable.", "Conversation not found."),
    "message_not_found": ("Message introuvable.", "Message not found."),
    "method_not_allowed": ("Méthode non autorisée sur cette ressource.", "Method not allowed on this resource."),
    "unauthorized": ("Authentification requise.", "Authentication required."),
    "invalid_token": ("Jeton d'authentification invalide, expiré ou révoqué.", "Invalid, expired or revoked token."),
    "forbidden": ("Accès refusé.", "Access denied."),
    "invalid_credentials": ("Email ou mot de passe incorrect.", "Incorrect email or password."),
    "validation_failed": ("Données invalides.", "Invalid data."),
    "invalid_json": ("Le corps de la requête n'est pas un JSON valide.", "The request body is not valid JSON."),
    "json_object_expected": ("Le corps de la requête doit être un objet JSON.", "The request body must be a JSON object."),
    "unsupported_media_type": (
        "Type de contenu non pris en charge : envoyez application/json.",
        "Unsupported content type: send application/json.",
    ),
    "payload_too_large": (
        "Requête trop volumineuse (au plus {limit} octets).",
        "Request body too large (at most {limit} bytes).",
    ),
    "rate_limited": ("Trop de requêtes : réessayez dans {seconds} s.", "Too many requests: try again in {seconds} s."),
    "login_throttled": (
        "Trop de tentatives de connexion : réessayez dans {seconds} s.",
        "Too many login attempts: try again in {seconds} s.",
    ),
    "conflict": ("Conflit avec l'état actuel de la ressource.", "Conflict with the current state of the resource."),
    "internal_error": ("Erreur interne du serveur.", "Internal server error."),
    "service_unavailable": ("Service temporairement indisponible.", "Service temporarily unavailable."),
    "bad_request": ("Requête HTTP mal formée.", "Malformed HTTP request."),
    "bad_url": ("Adresse invalide : le chemin doit être de l'UTF-8 encodé en URL.",
                "Invalid address: the path must be URL-encoded UTF-8."),
    "request_timeout": ("Requête reçue trop lentement : connexion fermée.",
                        "Request received too slowly: connection closed."),
    "uri_too_long": ("Adresse trop longue.", "Address too long."),
    "headers_too_large": ("En-têtes de requête trop volumineux.", "Request headers too large."),
    "too_many_connections": (
        "Trop de connexions ouvertes depuis votre adresse : réessayez dans un instant.",
        "Too many open connections from your address: try again in a moment.",
    ),
    "llm_failed": (
        "L'assistant n'a pas pu répondre : le modèle est indisponible ou surchargé. Réessayez dans un instant.",
        "The assistant could not answer: the model is unavailable or overloaded. Try again in a moment.",
    ),
    "llm_not_configured": (
        "Aucun modèle n'est configuré sur ce serveur (ANTHROPIC_API_KEY) : votre message est enregistré.",
        "No model is configured on this server (ANTHROPIC_API_KEY): your message was saved.",
    ),
    "llm_rejected": (
        "Le modèle a refusé la requête : {detail}",
        "The model refused the request: {detail}",
    ),
    "llm_key_refused": (
        "La clé d'API du modèle configurée sur ce serveur est refusée (ANTHROPIC_API_KEY) : prévenez son opérateur.",
        "The model API key configured on this server is refused (ANTHROPIC_API_KEY): tell its operator.",
    ),
    "llm_model_unknown": (
        "Le modèle {model} n'existe pas ou n'est pas accessible avec cette clé (CLAUDE_MODEL).",
        "The model {model} does not exist or is not available with this key (CLAUDE_MODEL).",
    ),
    "llm_interrupted": (
        "La réponse a été interrompue trop de fois (serveurs redémarrés) : renvoyez la question.",
        "The reply was interrupted too many times (servers restarted): send the question again.",
    ),
    "reply_failed": (
        "La réponse a échoué à cause d'une erreur interne du serveur.",
        "The reply failed because of an internal server error.",
    ),
    "reply_finished": ("Cette réponse est déjà terminée.", "This reply has already finished."),
    "not_a_reply": ("Ce message n'est pas une réponse de l'assistant.", "This message is not an assistant reply."),
    "message_too_long": (
        "Message trop long : au plus {max} caractères.",
        "Message too long: at most {max} characters.",
    ),
    # success
    "registered": ("Inscription réussie.", "Registration successful."),
    "logged_in": ("Connexion réussie.", "Logged in."),
    "logged_out": ("Déconnexion réussie.", "Logged out."),
    "conversation_deleted": ("Conversation supprimée.", "Conversation deleted."),
    # fields
    "field_email_taken": ("Cet email est déjà utilisé.", "This email is already registered."),
    "field_username_taken": ("Ce nom d'utilisateur est déjà pris.", "This username is already taken."),
    "field_not_string": ("Doit être une chaîne de caractères.", "Must be a string."),
    "field_blank": ("Ne doit pas être vide.", "Must not be empty."),
    "field_too_long": ("Trop long : au plus {max} caractères.", "Too long: at most {max} characters."),
    "field_too_short": ("Trop court : au moins {min} caractères.", "Too short: at least {min} characters."),
    "field_bad_characters": ("Contient des caractères non autorisés.", "Contains characters that are not allowed."),
    "field_username": (
        "De 3 à 50 caractères : lettres, chiffres, « _ », « . » ou « - ».",
        "3 to 50 characters: letters, digits, '_', '.' or '-'.",
    ),
    "field_email": ("Adresse email invalide.", "Invalid email address."),
    "field_url": ("URL http(s) invalide.", "Invalid http(s) URL."),
    "field_integer_range": ("Doit être un entier entre {min} et {max}.", "Must be an integer between {min} and {max}."),
    "field_index": ("Doit être un entier positif ou nul.", "Must be an integer, 0 or more."),
    "field_cursor": ("Curseur invalide.", "Invalid cursor."),
    "field_since": (
        "Un objet {{identifiant de réponse : dernier index reçu}} est attendu.",
        "An object {{reply id: last index received}} is expected.",
    ),
    "field_unknown": ("Champ inconnu.", "Unknown field."),
}


class Msg:
    """A message from `CATALOG`, translated when it reaches a request."""

    def __init__(self, key, **params):
        if key not in CATALOG:
            raise KeyError(key)
        self.key, self.params = key, params

    def render(self, language):
        french, english = CATALOG[self.key]
        return (english if language == "en" else french).format(**self.params)


def negotiate_language(request):
    return request.accept_language.lookup(LANGUAGES, default=DEFAULT_LANGUAGE)


def translate(request, text):
    """A `Msg`, a colander TranslationString or a plain string, in the request's language."""
    if isinstance(text, Msg):
        return text.render(request.locale_name)
    if isinstance(text, TranslationString):
        return request.localizer.translate(text)
    return str(text)


def includeme(config):
    config.set_locale_negotiator(negotiate_language)
    config.add_translation_dirs("colander:locale/")
